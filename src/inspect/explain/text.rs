//! The text report: a verdict line, one line per problem with its fix, then each path as
//! `kubenat trace` prints it. ANSI colour only when asked for (the CLI asks on a terminal).

use std::fmt::Write;

use super::report::{NodeReport, Problem, Report, Severity, Verdict};

const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const GREEN: &str = "\x1b[32m";
const RESET: &str = "\x1b[0m";

fn paint(text: &str, colour: &str, on: bool) -> String {
    if on {
        format!("{colour}{text}{RESET}")
    } else {
        text.to_string()
    }
}

fn verdict_colour(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Ok => GREEN,
        Verdict::Degraded => YELLOW,
        Verdict::Broken => RED,
    }
}

/// One line per problem, then its fix.
fn write_problems(out: &mut String, problems: &[Problem], colour: bool) {
    for problem in problems {
        let paint_as = match problem.severity {
            Severity::Error => RED,
            Severity::Warning => YELLOW,
        };
        let severity = paint(problem.severity.as_str(), paint_as, colour);
        let _ = writeln!(out, "{severity} {}: {}", problem.code.as_str(), problem.message);
        let _ = writeln!(out, "  fix: {}", problem.fix);
    }
}

/// The node report as text: verdict line, node problems with fixes, services per verdict,
/// then the count of services per problem code.
pub fn write_node_text(report: &NodeReport, colour: bool) -> String {
    let mut out = String::new();
    let verdict = paint(report.verdict.as_str(), verdict_colour(report.verdict), colour);
    let _ = writeln!(out, "node {}: {verdict}", report.node);
    write_problems(&mut out, &report.problems, colour);
    let verdicts: Vec<String> = report.verdicts.iter().map(|(v, n)| format!("{} {n}", v.as_str())).collect();
    let _ = writeln!(out, "services: {} ({})", report.services, verdicts.join(", "));
    for (code, n) in &report.counts {
        let _ = writeln!(out, "  {}: {n}", code.as_str());
    }
    out
}

/// The report as text; `colour` adds ANSI colours to the verdict and severities.
pub fn write_text(report: &Report, colour: bool) -> String {
    let mut out = String::new();
    let verdict = paint(report.verdict.as_str(), verdict_colour(report.verdict), colour);
    let count = report.problems.len();
    let _ = writeln!(out, "{}: {verdict} ({count} problem{})", report.service, if count == 1 { "" } else { "s" });
    write_problems(&mut out, &report.problems, colour);
    for port in &report.ports {
        let name = if port.name.is_empty() { String::new() } else { format!(" {}", port.name) };
        let chains = if port.chains.is_empty() { "(none)".to_string() } else { port.chains.join(" ") };
        let _ = writeln!(out, "\nport{name} {}/{}: chains {chains}", port.port, port.protocol);
        let _ = writeln!(
            out,
            "  policies: external {}, internal {}, affinity {}",
            port.policies.external_traffic_policy,
            port.policies.internal_traffic_policy,
            port.policies.session_affinity_seconds.map_or("off".to_string(), |s| format!("{s}s"))
        );
        for e in &port.endpoints {
            let state = match (e.ready, e.serving, e.terminating) {
                (true, _, _) => "ready",
                (false, true, true) => "terminating (serving)",
                (false, _, true) => "terminating",
                _ => "not ready",
            };
            let place = if e.local { "local" } else { "remote" };
            let _ = writeln!(out, "  endpoint {} {state} {place} p={:.3}", e.address, e.probability);
        }
        for path in &port.paths {
            let origin = if path.from_node { "from the node" } else { "from" };
            let _ = writeln!(out, "  {} {} {origin} {}:", path.kind.as_str(), path.destination, path.source);
            for line in path.trace.to_string().lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}
