//! `kill -9` of the daemon in the middle of a large sync — twice: during a full sync of 1,500
//! Services (forced by deleting the mangle canary, as a flush would), then during the restarted daemon's first full sync — then a clean restart.
//! A wrapper `iptables-nft-restore` first on the daemon's `PATH` (while a flag file exists)
//! marks that a restore started and pauses, so the kill lands while the daemon is still
//! feeding it; it then passes on what it got — the input truncated where the daemon died — to
//! the real restore, which must reject it without touching the tables.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use kubenat::apply::exec::Backend;

use crate::env::{web_targets, write_script, Env};
use testkit::daemon::DaemonOptions;
use testkit::objects::{self, EpState, Port};
use testkit::probe::ProbeConfig;

/// Services created in one go before the first kill.
const BULK: usize = 1500;

/// Creates `BULK` Services with two (unroutable) endpoints each.
fn apply_bulk(env: &Env) {
    let ports = [Port::new("http", 80, 8080, "TCP")];
    for i in 0..BULK {
        let name = format!("bulk{i}");
        let ip = Ipv4Addr::new(10, 97, (i / 250) as u8, 1 + (i % 250) as u8);
        env.api.apply(objects::service(&name, ip, &ports));
        let eps = [(Ipv4Addr::new(10, 251, (i / 250) as u8, 1 + (i % 250) as u8), EpState::Ready)];
        env.api.apply(objects::slice(&name, &objects::on_this_node(&eps), &ports));
    }
}

/// Waits until a paused restore has started (the wrapper touched `mark`), then `kill -9`s the
/// daemon; returns how many children (the restore) it had at that moment.
fn kill_mid_restore(env: &mut Env, mark: &Path) -> usize {
    env.until(Duration::from_secs(20), "a restore to start", || mark.exists().then_some(()));
    let children = env.daemon().children();
    let status = env.daemon_mut().kill9();
    let _ = std::fs::remove_file(mark);
    // The orphaned restore finishes by itself (its input ends where the daemon died).
    let gone = testkit::daemon::poll(Duration::from_secs(10), Duration::from_millis(50), || {
        children.iter().all(|pid| !Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    if gone.is_none() {
        env.fail("the restore orphaned by kill -9 did not finish within 10 s");
    }
    eprintln!("[kill -9] daemon #{} killed ({status}) while {} child process(es) ran", env.starts, children.len());
    children.len()
}

#[test]
fn kill_9_mid_sync_then_restart_converges_without_dropping_traffic() {
    let Some(real) = Some("/usr/sbin/iptables-nft-restore").filter(|p| Path::new(p).exists()) else {
        testkit::require(false, "/usr/sbin/iptables-nft-restore not installed");
        return;
    };
    let wrappers = tempfile::tempdir().expect("temp dir");
    let (flag, mark) = (wrappers.path().join("pause"), wrappers.path().join("restoring"));
    let sizes = wrappers.path().join("sizes");
    let script = format!(
        "#!/bin/sh\nif [ -e '{flag}' ]; then\n  touch '{mark}'\n  sleep 1\n  input=\"$(mktemp)\"\n  cat >\"$input\"\n  \
         wc -c <\"$input\" >>'{sizes}'\n  {real} \"$@\" <\"$input\"\n  status=$?\n  rm -f \"$input\"\n  exit $status\nfi\n\
         exec {real} \"$@\"\n",
        flag = flag.display(),
        mark = mark.display(),
        sizes = sizes.display()
    );
    write_script(wrappers.path(), "iptables-nft-restore", &script);
    let opts = DaemonOptions { path_prefix: Some(wrappers.path().to_path_buf()), ..DaemonOptions::new("nft") };
    let Some(mut env) = Env::new(Backend::Nft, opts) else { return };
    env.start_daemon();
    let services = env.apply_probed(2);
    let named: Vec<(&str, _)> = services.iter().map(|(n, ip)| (n.as_str(), *ip)).collect();
    let targets = web_targets(&named);
    env.until_all_answer(&targets);
    let probe = env.probe(targets, ProbeConfig::default());

    // 1. 1,500 Services are programmed; the full sync that the next period's canary check
    //    starts (the mangle canary is deleted, as a flush would) is killed.
    apply_bulk(&env);
    env.assert_converged(Duration::from_secs(30));
    let bulk_rules = |env: &Env| {
        env.save().lines().filter(|l| l.starts_with("-A KUBE-SERVICES") && l.contains("default/bulk")).count()
    };
    let before = bulk_rules(&env);
    std::fs::write(&flag, "").expect("flag");
    env.lab.node.run_ok(&["iptables-nft", "-t", "mangle", "-X", "KUBE-PROXY-CANARY"]);
    let mut children = kill_mid_restore(&mut env, &mark);
    let after = bulk_rules(&env);
    if after != before {
        env.fail(&format!("a restore cut by kill -9 changed the tables: {before} bulk rules before, {after} after"));
    }

    // 2. The restarted daemon's first (full) sync is killed too.
    env.spawn_daemon();
    children += kill_mid_restore(&mut env, &mark);

    // 3. A clean restart converges.
    std::fs::remove_file(&flag).expect("remove flag");
    let restarted = Instant::now();
    env.start_daemon();
    let converged = env.assert_converged(Duration::from_secs(30));
    probe.wait_for_more(20, Duration::from_secs(5));
    let report = probe.stop();
    let scrape = env.scrape();
    let full_size =
        scrape.get(testkit::daemon::RESTORE_BYTES_FULL) / scrape.get(testkit::daemon::RESTORE_COUNT_FULL).max(1.0);
    let cut = std::fs::read_to_string(&sizes).unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(", ");
    eprintln!(
        "[kill -9] 2 kills mid-restore ({children} restores cut, fed {cut} bytes of a ~{full_size:.0}-byte full \
         restore; all {before} bulk rules intact after the first); rules equal render {} ms after the clean \
         restart; probe: {}",
        (restarted.elapsed().max(converged)).as_millis(),
        report.summary()
    );
    if children < 2 {
        env.fail("a kill did not land while a restore was running");
    }
    let failures = report.failures();
    if !failures.is_empty() {
        env.fail(&format!("probe failures across kill -9 and restart:\n{}", report.describe(&failures)));
    }
}
