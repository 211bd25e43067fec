//! A new flannel lease (subnet.env replaced by rename, as flanneld writes it) makes the running
//! daemon resync with the new cluster CIDR. Runs the real daemon in `--dry-run` mode (it logs
//! every restore input) against `--objects`, so it needs neither root nor an API server.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_lease(dir: &Path, network: &str, subnet: &str) {
    let tmp = dir.join("subnet.env.tmp");
    std::fs::write(
        &tmp,
        format!("FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={subnet}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"),
    )
    .expect("write lease");
    std::fs::rename(&tmp, dir.join("subnet.env")).expect("rename lease");
}

fn wait_for(log: &Path, needle: &str, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(log) {
            let _ = f.read_to_string(&mut text);
        }
        if text.contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn new_lease_triggers_a_resync_with_the_new_cidr() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_lease(dir.path(), "10.42.0.0/16", "10.42.3.1/24");
    let log = dir.path().join("daemon.log");
    let child = Command::new(env!("CARGO_BIN_EXE_kubenat"))
        .args(["--objects", "examples/demo", "--hostname-override", "node-1", "--dry-run"])
        .args(["--healthz-bind-address", "", "--metrics-bind-address", ""])
        .args(["--iptables-min-sync-period", "100ms", "--log", "info"])
        .arg("--flannel-subnet-file")
        .arg(dir.path().join("subnet.env"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start kubenat");
    let _daemon = Daemon(child);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(wait_for(&log, "! -s 10.42.0.0/16 -j KUBE-MARK-MASQ", Duration::from_secs(10)), "{}", read());
    write_lease(dir.path(), "10.43.0.0/16", "10.43.7.1/24");
    assert!(wait_for(&log, "flannel lease changed", Duration::from_secs(10)), "{}", read());
    assert!(wait_for(&log, "! -s 10.43.0.0/16 -j KUBE-MARK-MASQ", Duration::from_secs(10)), "{}", read());
}
