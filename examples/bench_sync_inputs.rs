//! Writes the restore inputs `scripts/bench-sync.sh` times, straight from the library, so the
//! benchmark applies exactly what the daemon would: the synthetic cluster of the criterion
//! benches (N ClusterIP services × 10 endpoints) rendered, its first full sync, a periodic full
//! sync, and for three changes (one endpoint changed, one service added, one removed) the
//! partial plan per backend, the same change as a kube-proxy-style rewrite and with deletes by
//! rule number, the plan that reverts it, and the floor (one service's SVC+SEP chains).
//! Also times render and plan (median of 3) and, with `--comments`, writes the full ruleset with
//! per-endpoint comments (as below kube-proxy's large-cluster threshold) to measure that mode.
//!
//! `cargo run --release --example bench_sync_inputs -- N OUT_DIR [--comments]`

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Instant;

use kubenat::model::ClusterState;
use kubenat::rules::backend::Backend;
use kubenat::rules::extras;
use kubenat::rules::plan::{plan_partial_with, PlanOptions};
use kubenat::rules::render::{jump_rules, render};
use kubenat::rules::ruleset::{Rule, RuleOp, Ruleset, Table, TableName};

#[path = "../benches/support/synthetic.rs"]
mod synthetic;

use synthetic::{name, node, ENDPOINTS};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(n), Some(out)) = (args.first().and_then(|a| a.parse::<u32>().ok()), args.get(1)) else {
        eprintln!("usage: bench_sync_inputs N OUT_DIR [--comments]");
        std::process::exit(2);
    };
    if let Err(e) = run(n, Path::new(out), args.iter().any(|a| a == "--comments")) {
        eprintln!("bench_sync_inputs: {e}");
        std::process::exit(1);
    }
}

fn run(n: u32, out: &Path, comments: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    let node = node();
    let base = synthetic::state(n, ENDPOINTS);
    let (render_ms, last) = timed(|| render(&base, &node));
    let mut stats = format!("{{\"services\": {n}, \"render_ms\": {render_ms:.1}");
    let first = extras::plan(&last, &jump_rules(&node), &Ruleset::default());
    write(out, "base.txt", &first.to_string(), &mut stats)?;
    write(out, "full.txt", &extras::plan(&last, &[], &last).to_string(), &mut stats)?;
    let victim = name(n / 2);
    write(out, "floor.txt", &floor(&last, &format!("{victim} cluster IP")).to_string(), &mut stats)?;
    for (change, state) in changes(&base, n) {
        let next = render(&state, &node);
        for backend in [Backend::Nft, Backend::Legacy] {
            let opts = PlanOptions::for_backend(backend);
            let (plan_ms, plan) = timed(|| plan_partial_with(&last, &next, &opts));
            let _ = write!(stats, ", \"{change}.{backend}.plan_ms\": {plan_ms:.1}");
            write(out, &format!("{change}.{backend}.txt"), &plan.to_string(), &mut stats)?;
            if backend == Backend::Nft {
                write(out, &format!("{change}.bynum.txt"), &by_number(&last, &plan), &mut stats)?;
                let revert = plan_partial_with(&next, &last, &opts);
                write(out, &format!("{change}.revert.txt"), &revert.to_string(), &mut stats)?;
            }
        }
        let rewrite = plan_partial_with(&last, &next, &PlanOptions::REWRITE);
        write(out, &format!("{change}.kubeproxy.txt"), &rewrite.to_string(), &mut stats)?;
    }
    if comments {
        let commented = extras::plan(&with_comments(&base, &last), &jump_rules(&node), &Ruleset::default());
        write(out, "base-comments.txt", &commented.to_string(), &mut stats)?;
    }
    stats.push_str("}\n");
    std::fs::write(out.join("stats.json"), stats)
}

/// Median wall time of three runs, in ms, and the last result.
fn timed<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut times = Vec::new();
    let mut result = None;
    for _ in 0..3 {
        let start = Instant::now();
        result = Some(f());
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    (times[1], result.expect("ran three times"))
}

fn write(dir: &Path, file: &str, text: &str, stats: &mut String) -> std::io::Result<()> {
    let _ = write!(stats, ", \"{file}\": {}", text.len());
    std::fs::write(dir.join(file), text)
}

/// One endpoint of the middle service moved; a service added; the middle service removed.
fn changes(base: &ClusterState, n: u32) -> Vec<(&'static str, ClusterState)> {
    let mut endpoint = base.clone();
    if let Some(svc) = endpoint.services.get_mut(&name(n / 2)).map(std::sync::Arc::make_mut) {
        svc.endpoints[3].addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 250, 0, 1)), 8080);
        svc.endpoints.sort_by_cached_key(|e| e.key());
    }
    let mut added = base.clone();
    added.services.insert(name(n), synthetic::service(n, ENDPOINTS).into());
    let mut removed = base.clone();
    removed.services.remove(&name(n / 2));
    vec![("endpoint", endpoint), ("add", added), ("remove", removed)]
}

/// The floor: the nat chains of the service whose KUBE-SERVICES rule carries `comment` (its
/// SVC chain and the SEP chains it jumps to) declared and written again, unchanged.
fn floor(last: &Ruleset, comment: &str) -> Ruleset {
    let mut table = Table::new(TableName::Nat);
    let Some(nat) = last.table(TableName::Nat) else { return Ruleset::default() };
    let svc = nat.chain_rules("KUBE-SERVICES").find(|r| r.comment() == Some(comment)).and_then(Rule::target);
    let Some(svc) = svc else { return Ruleset::default() };
    let mut chains = vec![svc.to_string()];
    chains
        .extend(nat.chain_rules(svc).filter_map(Rule::target).filter(|t| t.starts_with("KUBE-SEP-")).map(String::from));
    for chain in &chains {
        table.chains.extend(nat.chains.iter().find(|c| c.name.as_str() == chain).cloned());
        table.rules.extend(nat.chain_rules(chain).cloned());
    }
    Ruleset { tables: vec![table] }
}

/// `plan`'s text with every `-D chain <rule>` of an edited chain written `-D chain <number>`
/// (numbers as iptables-restore resolves them, line by line, against what `last` left).
fn by_number(last: &Ruleset, plan: &Ruleset) -> String {
    let mut chains: HashMap<(TableName, String), Vec<String>> = HashMap::new();
    let mut text = String::new();
    for table in &plan.tables {
        let _ = writeln!(text, "*{}", table.name);
        let declared: Vec<&str> = table.chains.iter().map(|c| c.name.as_str()).collect();
        for line in table.to_string().lines().skip(1) {
            let mut words = line.splitn(3, ' ');
            let (op, chain, rest) = (words.next(), words.next(), words.next().unwrap_or(""));
            let (Some(op @ ("-D" | "-I" | "-A")), Some(chain)) = (op, chain) else {
                let _ = writeln!(text, "{line}");
                continue;
            };
            if declared.contains(&chain) {
                let _ = writeln!(text, "{line}");
                continue;
            }
            let current = chains.entry((table.name, chain.to_string())).or_insert_with(|| {
                let t = last.tables.iter().filter(|t| t.name == table.name);
                t.flat_map(|t| t.chain_rules(chain)).map(|r| spec(&r.to_string())).collect()
            });
            match op {
                "-D" => {
                    let at = current.iter().position(|r| r == rest).expect("the rule to delete was applied");
                    current.remove(at);
                    let _ = writeln!(text, "-D {chain} {}", at + 1);
                }
                "-I" => {
                    let (number, rule) = rest.split_once(' ').expect("-I chain N rule");
                    let at: usize = number.parse().expect("insert position");
                    current.insert(at - 1, rule.to_string());
                    let _ = writeln!(text, "{line}");
                }
                _ => {
                    current.push(rest.to_string());
                    let _ = writeln!(text, "{line}");
                }
            }
        }
    }
    text
}

/// A rule line's text after `-A CHAIN `.
fn spec(line: &str) -> String {
    line.splitn(3, ' ').nth(2).unwrap_or("").to_string()
}

/// `last` with the per-endpoint comments kube-proxy writes below its large-cluster threshold:
/// each service's chains come from rendering that service alone (10 endpoints: commented).
fn with_comments(base: &ClusterState, last: &Ruleset) -> Ruleset {
    let node = node();
    let mut per_chain: HashMap<String, Vec<Rule>> = HashMap::new();
    for (key, svc) in &base.services {
        let mut one = ClusterState::default();
        one.services.insert(key.clone(), svc.clone());
        for rule in render(&one, &node).tables.into_iter().filter(|t| t.name == TableName::Nat).flat_map(|t| t.rules) {
            let chain = rule.chain.as_str();
            if chain.starts_with("KUBE-SVC-") || chain.starts_with("KUBE-SEP-") {
                per_chain.entry(chain.to_string()).or_default().push(rule);
            }
        }
    }
    let mut out = last.clone();
    for table in out.tables.iter_mut().filter(|t| t.name == TableName::Nat) {
        let mut done: HashSet<String> = HashSet::new();
        let mut rules = Vec::with_capacity(table.rules.len());
        for rule in std::mem::take(&mut table.rules) {
            match per_chain.get(rule.chain.as_str()) {
                Some(commented) => {
                    if done.insert(rule.chain.to_string()) {
                        rules.extend(commented.iter().cloned().map(|r| Rule { op: RuleOp::Append, ..r }));
                    }
                }
                None => rules.push(rule),
            }
        }
        table.rules = rules;
    }
    out
}
