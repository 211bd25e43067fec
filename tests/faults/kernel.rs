//! Faults in the kernel's rules and tools: a flushed nat table, failing `iptables-restore`,
//! the xtables lock held by another agent while it rewrites its own chains.

use std::time::{Duration, Instant, SystemTime};

use kubenat::apply::exec::Backend;

use crate::env::{web_targets, Env};
use testkit::daemon::DaemonOptions;
use testkit::objects;
use testkit::probe::{epoch_secs, ProbeConfig};

/// Sync period of these tests' daemons: the bound for canary repair.
const SYNC_PERIOD: Duration = Duration::from_secs(3);

#[test]
fn nat_table_flushed_behind_our_back_is_restored_within_one_sync_period() {
    let opts = DaemonOptions { sync_period: "3s", ..DaemonOptions::new("nft") };
    let Some(mut env) = Env::new(Backend::Nft, opts) else { return };
    env.start_daemon();
    let services = env.apply_probed(2);
    let named: Vec<(&str, _)> = services.iter().map(|(n, ip)| (n.as_str(), *ip)).collect();
    let targets = web_targets(&named);
    env.until_all_answer(&targets);
    let probe = env.probe(targets, ProbeConfig::default());
    std::thread::sleep(Duration::from_secs(1));

    // Flush and delete every nat chain, as an operator's `iptables -t nat -F; -X` would.
    let flushed_at = SystemTime::now();
    let flushed = Instant::now();
    env.lab.node.run_ok(&["iptables-nft", "-t", "nat", "-F"]);
    env.lab.node.run_ok(&["iptables-nft", "-t", "nat", "-X"]);
    let repaired = env.until(SYNC_PERIOD * 3, "the nat rules to come back", || {
        env.save().contains("-A KUBE-SERVICES").then(Instant::now)
    });
    let window = repaired.duration_since(flushed);
    // Let the probe show the services answer again.
    probe.wait_for_more(40, Duration::from_secs(10));
    let report = probe.stop();
    eprintln!("[nat flush] rules back {} ms after the flush; probe: {}", window.as_millis(), report.summary());
    let failures = report.failures();
    let outside: Vec<_> = failures
        .iter()
        .copied()
        .filter(|a| a.start < flushed_at || a.start.duration_since(flushed_at).unwrap_or_default() > window)
        .collect();
    let last_failure = failures.iter().map(|a| a.end).max();
    if let Some(last) = last_failure {
        let gap = last.duration_since(flushed_at).unwrap_or_default();
        eprintln!(
            "[nat flush] {} probe failures, all between the flush and +{} ms (flush at {:.3})",
            failures.len(),
            gap.as_millis(),
            epoch_secs(flushed_at)
        );
    }
    if window > SYNC_PERIOD + Duration::from_secs(1) {
        env.fail(&format!("the flushed rules took {window:?} to come back (sync period {SYNC_PERIOD:?})"));
    }
    if !outside.is_empty() {
        env.fail(&format!("probe failures outside the flush window:\n{}", report.describe(&outside)));
    }
    if !env.daemon().log().contains("KUBE-PROXY-CANARY is gone") {
        env.fail("the daemon repaired the rules without noticing the flush (no canary warning in its log)");
    }
    let converged = env.assert_converged(Duration::from_secs(10));
    eprintln!("[nat flush] rules equal `kubenat render` ({} ms after the probe stopped)", converged.as_millis());
}

/// What the injected `iptables-restore` prints when it fails.
const INJECTED: &str = "kubenat-faults: injected restore failure";

/// The real `iptables-nft-restore`, if installed where the wrappers expect it.
fn real_nft_restore() -> Option<&'static str> {
    let path = "/usr/sbin/iptables-nft-restore";
    std::path::Path::new(path).exists().then_some(path)
}

#[test]
fn failing_restores_keep_the_last_rules_forwarding_and_recover() {
    let Some(real) = real_nft_restore() else {
        testkit::require(false, "/usr/sbin/iptables-nft-restore not installed");
        return;
    };
    let wrappers = tempfile::tempdir().expect("temp dir");
    let flag = wrappers.path().join("fail-restore");
    let script = format!(
        "#!/bin/sh\nif [ -e '{flag}' ]; then\n  cat >/dev/null\n  echo '{INJECTED}' >&2\n  exit 1\nfi\nexec {real} \"$@\"\n",
        flag = flag.display()
    );
    crate::env::write_script(wrappers.path(), "iptables-nft-restore", &script);
    let opts = DaemonOptions {
        sync_period: "3s",
        path_prefix: Some(wrappers.path().to_path_buf()),
        ..DaemonOptions::new("nft")
    };
    let Some(mut env) = Env::new(Backend::Nft, opts) else { return };
    env.start_daemon();
    let services = env.apply_probed(2);
    let named: Vec<(&str, _)> = services.iter().map(|(n, ip)| (n.as_str(), *ip)).collect();
    let targets = web_targets(&named);
    env.until_all_answer(&targets);
    let probe = env.probe(targets, ProbeConfig::default());

    // Restores fail: p1 loses pod-2 and a new Service `late` appears, neither can land.
    std::fs::write(&flag, "").expect("flag");
    let ready =
        |pods: &[usize]| -> Vec<_> { pods.iter().map(|&i| (env.backend_ip(i), objects::EpState::Ready)).collect() };
    env.api.apply(objects::slice("p1", &objects::on_this_node(&ready(&[0, 1])), &objects::web_ports()));
    let late_ip = crate::env::probed_ip(9);
    env.api.apply(objects::service("late", late_ip, &objects::web_ports()));
    env.api.apply(objects::slice("late", &objects::on_this_node(&ready(&[0])), &objects::web_ports()));
    let failed = |s: &testkit::daemon::Scrape| {
        s.get(testkit::daemon::RESTORE_FAILURES) + s.get(testkit::daemon::PARTIAL_RESTORE_FAILURES)
    };
    // Several failed syncs, and /healthz turns unhealthy (2 × sync period without success).
    let failures = env.until(Duration::from_secs(20), "3 failed restores and an unhealthy /healthz", || {
        let n = failed(&env.scrape());
        (n >= 3.0 && env.daemon().healthz() == Some(503)).then_some(n)
    });
    if env.save().contains(&late_ip.to_string()) {
        env.fail("a Service created while restores fail reached the kernel");
    }
    let log = env.daemon().log();
    if !log.contains(INJECTED) {
        env.fail("the daemon's log does not show what iptables-restore printed");
    }

    // Restores work again: everything lands, /healthz recovers.
    std::fs::remove_file(&flag).expect("remove flag");
    let fixed = Instant::now();
    let converged = env.assert_converged(Duration::from_secs(15));
    env.until(Duration::from_secs(10), "/healthz 200 after recovery", || {
        (env.daemon().healthz() == Some(200)).then_some(())
    });
    let report = probe.stop();
    eprintln!(
        "[restore failures] {failures} failed restores counted in /metrics; rules equal render {} ms after restores \
         worked again; probe: {}",
        converged.max(fixed.elapsed()).as_millis(),
        report.summary()
    );
    let failures = report.failures();
    if !failures.is_empty() {
        env.fail(&format!("the last good rules did not keep forwarding:\n{}", report.describe(&failures)));
    }
    let reply = testkit::traffic::request(
        env.client(),
        testkit::traffic::Proto::Tcp,
        std::net::SocketAddr::from((late_ip, 80)),
        Duration::from_secs(1),
    );
    if reply.server() != Some("pod-0") {
        env.fail(&format!("the Service created during the failures does not answer after recovery: {reply}"));
    }
}

// ---------------------------------------------------------------------------------------------
// The xtables lock held by another agent, which also rewrites its own chains meanwhile.

/// flannel-like rules another agent keeps rewriting: (table, chain, built-in chain, rules).
const NEIGHBOUR: [(&str, &str, &str, &[&str]); 2] = [
    (
        "nat",
        "FLANNEL-POSTRTG",
        "POSTROUTING",
        &[
            "-m mark --mark 0x4000/0x4000 -m comment --comment flanneld-masq -j RETURN",
            "-s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment flanneld-masq -j RETURN",
            "-s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment flanneld-masq -j MASQUERADE --random-fully",
        ],
    ),
    (
        "filter",
        "FLANNEL-FWD",
        "FORWARD",
        &[
            "-s 10.244.0.0/16 -m comment --comment flanneld-forward -j ACCEPT",
            "-d 10.244.0.0/16 -m comment --comment flanneld-forward -j ACCEPT",
        ],
    ),
];

/// `iptables-legacy -w 5 ARGS` in `ns` with the per-test lock file; whether it succeeded.
fn neighbour_iptables(ns: &str, lock: &std::path::Path, args: &[&str]) -> bool {
    let mut command = std::process::Command::new("ip");
    command.args(["netns", "exec", ns, "iptables-legacy", "-w", "5"]).args(args);
    command.env("XTABLES_LOCKFILE", lock).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    command.status().is_ok_and(|s| s.success())
}

/// One round of the neighbour: create (if missing), flush and refill its chains; ensure its jumps.
fn neighbour_round(ns: &str, lock: &std::path::Path) -> bool {
    let mut ok = true;
    for (table, chain, builtin, rules) in NEIGHBOUR {
        let _ = neighbour_iptables(ns, lock, &["-t", table, "-N", chain]); // fails when it exists
        ok &= neighbour_iptables(ns, lock, &["-t", table, "-F", chain]);
        for rule in rules {
            let mut args = vec!["-t", table, "-A", chain];
            args.extend(rule.split_whitespace());
            ok &= neighbour_iptables(ns, lock, &args);
        }
        if !neighbour_iptables(ns, lock, &["-t", table, "-C", builtin, "-j", chain]) {
            ok &= neighbour_iptables(ns, lock, &["-t", table, "-A", builtin, "-j", chain]);
        }
    }
    ok
}

#[test]
fn held_xtables_lock_and_a_neighbour_rewriting_its_chains() {
    if !testkit::require_root() || !testkit::require_program("flock") {
        return;
    }
    let lock_dir = tempfile::tempdir().expect("temp dir");
    let lock = lock_dir.path().join("xtables.lock");
    let env_lock = ("XTABLES_LOCKFILE".to_string(), lock.to_string_lossy().into_owned());
    let opts = DaemonOptions { sync_period: "3s", env: vec![env_lock], ..DaemonOptions::new("legacy") };
    let Some(mut env) = Env::new(Backend::Legacy, opts) else { return };
    env.start_daemon();
    let services = env.apply_probed(2);
    let named: Vec<(&str, _)> = services.iter().map(|(n, ip)| (n.as_str(), *ip)).collect();
    let targets = web_targets(&named);
    env.until_all_answer(&targets);
    let probe = env.probe(targets, ProbeConfig::default());

    let stop = std::sync::atomic::AtomicBool::new(false);
    let node = env.lab.node.name().to_string();
    let (rounds, held, landed) = std::thread::scope(|scope| {
        let neighbour = scope.spawn(|| {
            let (mut rounds, mut failed) = (0u32, 0u32);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                failed += u32::from(!neighbour_round(&node, &lock));
                rounds += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (rounds, failed)
        });
        std::thread::sleep(Duration::from_secs(1));
        // Another agent holds the lock for 3 s (as flannel's resync does, briefly); a change
        // made meanwhile must wait for it (restore -w) and then land.
        let hold = Duration::from_secs(3);
        let mut holder = std::process::Command::new("flock")
            .arg("-x")
            .arg(&lock)
            .args(["sleep", &hold.as_secs().to_string()])
            .spawn()
            .expect("start flock");
        let taken = Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        let q_ip = crate::env::probed_ip(8);
        env.api.apply(objects::service("q", q_ip, &objects::web_ports()));
        env.api.apply(objects::slice(
            "q",
            &objects::on_this_node(&[(env.backend_ip(1), objects::EpState::Ready)]),
            &objects::web_ports(),
        ));
        let landed = env.until(hold + Duration::from_secs(15), "the change made under the lock to land", || {
            env.save().contains(&format!("-d {q_ip}/32")).then(|| taken.elapsed())
        });
        let _ = holder.wait();
        std::thread::sleep(Duration::from_secs(4)); // a periodic sync (canary checks) next to the neighbour
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let rounds = neighbour.join().expect("neighbour thread");
        (rounds, hold, landed)
    });
    let report = probe.stop();
    eprintln!(
        "[xtables lock] lock held {} ms; the change made meanwhile landed {} ms after it was taken; the neighbour \
         rewrote its chains {} times ({} rounds with a failed command); probe: {}",
        held.as_millis(),
        landed.as_millis(),
        rounds.0,
        rounds.1,
        report.summary()
    );
    if landed < held - Duration::from_millis(500) {
        env.fail(&format!("the change landed after {landed:?} although the lock was held {held:?}: lock not honoured"));
    }
    let failures = report.failures();
    if !failures.is_empty() {
        env.fail(&format!("probe failures next to the lock holder and the neighbour:\n{}", report.describe(&failures)));
    }
    if rounds.1 > 0 {
        env.fail(&format!("{} of the neighbour's rounds had a failing iptables command", rounds.1));
    }
    // Theirs: every chain with exactly its rules, one jump each.
    let save = env.save();
    for (_, chain, builtin, rules) in NEIGHBOUR {
        let own = save.lines().filter(|l| l.starts_with(&format!("-A {chain} "))).count();
        let jumps = save
            .lines()
            .filter(|l| l.starts_with(&format!("-A {builtin} ")) && l.ends_with(&format!("-j {chain}")))
            .count();
        if own != rules.len() || jumps != 1 {
            env.fail(&format!("{chain}: {own} rules (want {}), {jumps} jumps from {builtin} (want 1)", rules.len()));
        }
    }
    // Ours.
    env.assert_converged(Duration::from_secs(10));
}
