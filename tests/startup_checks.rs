//! Startup checks and the subnet.env watch: `gather` + `evaluate` on fake /proc trees for every
//! check both ways; as root, the same inside a throwaway network namespace with real sysctls and
//! a flannel chain planted with iptables-legacy; `SubnetWatch` following a file that appears,
//! is replaced by rename and breaks.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubenat::apply::exec::{Backend, ExecIptables, Iptables, RestoreOptions, Tool};
use kubenat::apply::fake::FakeIptables;
use kubenat::flannel::subnet_env::SubnetEnv;
use kubenat::flannel::watch::SubnetWatch;
use kubenat::model::IpFamily;
use kubenat::startup::{self, CheckConfig, CheckResult, Facts, Sysctl, SysctlReader, SysctlValue};
use testkit::netns::NetNs;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const NOFLUSH: RestoreOptions = RestoreOptions { noflush: true, counters: false };
/// What flanneld puts in nat (abridged): its chain, the mark RETURN and the POSTROUTING jump.
const FLANNEL_NAT: &str = "*nat\n:FLANNEL-POSTRTG - [0:0]\n\
    -A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n\
    -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment \"flanneld masq\" -j RETURN\nCOMMIT\n";

fn cfg(backend: Backend) -> CheckConfig {
    CheckConfig { localhost_nodeports: true, ipv6: false, backend: Some(backend) }
}

fn find<'a>(results: &'a [CheckResult], name: &str) -> &'a CheckResult {
    results.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no {name} check in {results:#?}"))
}

/// A fake root holding `files` under `proc/sys`.
fn fake_root(files: &[(Sysctl, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (sysctl, value) in files {
        let path = dir.path().join(sysctl.path());
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, format!("{value}\n")).expect("write sysctl");
    }
    dir
}

fn gather_fake(root: &Path, legacy: &FakeIptables, nft: &FakeIptables) -> Facts {
    startup::gather(&SysctlReader::Local(root.to_path_buf()), legacy, nft)
}

#[test]
fn every_check_passes_and_fails_on_a_fake_proc_tree() {
    let all_on = [(Sysctl::BridgeNfCallIptables, "1"), (Sysctl::IpForward, "1"), (Sysctl::RouteLocalnet, "1")];
    let (legacy, nft) = (FakeIptables::new(), FakeIptables::new());
    nft.restore(IpFamily::V4, FLANNEL_NAT, NOFLUSH).expect("plant flannel in nft");

    let good = fake_root(&all_on);
    let results = startup::evaluate(&gather_fake(good.path(), &legacy, &nft), &cfg(Backend::Nft));
    assert_eq!(results.len(), 4);
    assert!(results.iter().all(|r| r.ok), "{results:#?}");

    // (file to change, its new content or None to delete it, check, words of the warning)
    let failures: [(Sysctl, Option<&str>, &str, &str); 4] = [
        (Sysctl::BridgeNfCallIptables, Some("0"), "br_netfilter", "net.bridge.bridge-nf-call-iptables is 0"),
        (Sysctl::BridgeNfCallIptables, None, "br_netfilter", "br_netfilter is not loaded"),
        (Sysctl::IpForward, Some("0"), "ip_forward", "net.ipv4.ip_forward is 0"),
        (Sysctl::RouteLocalnet, Some("0"), "route_localnet", "net.ipv4.conf.all.route_localnet is 0"),
    ];
    for (sysctl, value, name, words) in failures {
        let files: Vec<(Sysctl, &str)> = all_on
            .iter()
            .filter_map(|&(s, v)| if s == sysctl { value.map(|value| (s, value)) } else { Some((s, v)) })
            .collect();
        let root = fake_root(&files);
        let results = startup::evaluate(&gather_fake(root.path(), &legacy, &nft), &cfg(Backend::Nft));
        let failed: Vec<&str> = results.iter().filter(|r| !r.ok).map(|r| r.name).collect();
        assert_eq!(failed, [name], "{sysctl:?} = {value:?}: {results:#?}");
        let message = &find(&results, name).message;
        assert!(message.contains(words) && message.contains("Fix: "), "{message}");
    }

    // route_localnet=0 is fine without localhost NodePorts.
    let root =
        fake_root(&[(Sysctl::BridgeNfCallIptables, "1"), (Sysctl::IpForward, "1"), (Sysctl::RouteLocalnet, "0")]);
    let facts = gather_fake(root.path(), &legacy, &nft);
    let results = startup::evaluate(&facts, &CheckConfig { localhost_nodeports: false, ..cfg(Backend::Nft) });
    assert!(find(&results, "route_localnet").ok);

    // The backend check, both ways: flannel is in nft.
    let results = startup::evaluate(&facts, &cfg(Backend::Legacy));
    let backend = find(&results, "iptables_backend");
    assert!(!backend.ok);
    assert!(backend.message.contains("start with --iptables-backend nft"), "{}", backend.message);
}

/// Runs the checks for namespace `ns` the way the daemon runs them for the host.
fn gather_in(ns: &NetNs) -> Facts {
    let legacy = ExecIptables::new(Backend::Legacy).in_netns(ns.name());
    let nft = ExecIptables::new(Backend::Nft).in_netns(ns.name());
    startup::gather(&SysctlReader::Netns(ns.name().to_string()), &legacy, &nft)
}

#[test]
fn real_sysctls_and_backends_in_a_network_namespace() {
    let tools = [Backend::Legacy, Backend::Nft].map(|b| b.binary(IpFamily::V4, Tool::Restore));
    if !testkit::require_root() || !tools.iter().all(|t| testkit::require_program(t)) {
        return;
    }
    let ns = NetNs::new("chk");

    // The namespace reader sees what `sysctl` sees in there, for every sysctl.
    let reader = SysctlReader::Netns(ns.name().to_string());
    for sysctl in Sysctl::ALL {
        let expected = match ns.sysctl_get(sysctl.key()) {
            Some(text) => SysctlValue::Set(text.parse().expect("sysctl prints a number")),
            None => SysctlValue::Missing,
        };
        assert_eq!(reader.read(sysctl), expected, "{}", sysctl.key());
    }

    ns.sysctl("net.ipv4.ip_forward", "0");
    ns.sysctl("net.ipv4.conf.all.route_localnet", "0");
    let facts = gather_in(&ns);
    assert_eq!(facts.ip_forward, SysctlValue::Set(0));
    let results = startup::evaluate(&facts, &cfg(Backend::Nft));
    assert!(!find(&results, "ip_forward").ok, "{results:#?}");
    assert!(!find(&results, "route_localnet").ok, "{results:#?}");
    // A fresh namespace holds no flannel rules in either backend: nothing to compare.
    assert_eq!(facts.flannel_rules.legacy, Some(0));
    assert_eq!(facts.flannel_rules.nft, Some(0));
    assert!(find(&results, "iptables_backend").ok);

    ns.sysctl("net.ipv4.ip_forward", "1");
    ns.sysctl("net.ipv4.conf.all.route_localnet", "1");
    let results = startup::evaluate(&gather_in(&ns), &cfg(Backend::Nft));
    assert!(find(&results, "ip_forward").ok, "{results:#?}");
    assert!(find(&results, "route_localnet").ok, "{results:#?}");

    // flannel's chain planted with iptables-legacy: kubenat writing nft is warned.
    ExecIptables::new(Backend::Legacy).in_netns(ns.name()).restore(IpFamily::V4, FLANNEL_NAT, NOFLUSH).expect("plant");
    let facts = gather_in(&ns);
    assert_eq!(facts.flannel_rules.legacy, Some(3), "{facts:?}");
    assert_eq!(facts.flannel_rules.nft, Some(0), "{facts:?}");
    let backend = find(&startup::evaluate(&facts, &cfg(Backend::Nft)), "iptables_backend").clone();
    assert!(!backend.ok);
    assert!(backend.message.contains("flannel's rules are in iptables-legacy but kubenat writes iptables-nft"));
    assert!(backend.message.contains("--iptables-backend legacy"), "{}", backend.message);
    assert!(find(&startup::evaluate(&facts, &cfg(Backend::Legacy)), "iptables_backend").ok);
}

#[test]
fn a_missing_namespace_is_unreadable_not_missing() {
    if !testkit::require_root() {
        return;
    }
    let reader = SysctlReader::Netns(format!("knt-chk-{}-absent", std::process::id()));
    let value = reader.read(Sysctl::IpForward);
    assert!(matches!(&value, SysctlValue::Unreadable(why) if why.contains("ip netns exec")), "{value:?}");
}

/// Writes `text` to `path` the way flanneld does: a temporary file renamed over it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

async fn next_change(rx: &mut watch::Receiver<Option<SubnetEnv>>) -> Option<SubnetEnv> {
    tokio::time::timeout(Duration::from_secs(3), rx.changed())
        .await
        .expect("the watch saw the change within 3 s")
        .expect("watch task alive");
    rx.borrow_and_update().clone()
}

/// Collects what the fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().map_err(|_| io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn count(&self, needle: &str) -> usize {
        let bytes = self.0.lock().expect("lock").clone();
        String::from_utf8_lossy(&bytes).matches(needle).count()
    }
}

// current_thread runtime: the watch task runs on this thread, under this test's subscriber.
#[tokio::test]
async fn subnet_watch_follows_appearing_renamed_and_broken_files() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("subnet.env");
    let shutdown = CancellationToken::new();
    let watch = SubnetWatch::start(path.clone(), Duration::from_millis(50), shutdown.clone());
    let mut rx = watch.subscribe();
    assert_eq!(watch.current(), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(log.count("waiting for flannel's subnet.env at"), 1, "logged once while missing");

    replace(&path, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\n");
    let env = next_change(&mut rx).await.expect("a lease");
    assert_eq!(env.subnets, ["10.244.1.0/24".parse().expect("cidr")]);
    assert_eq!(log.count("found flannel's subnet.env at"), 1);

    replace(&path, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\n");
    let env = next_change(&mut rx).await.expect("a lease");
    assert_eq!(env.subnets, ["10.244.7.0/24".parse().expect("cidr")]);
    assert_eq!(watch.current(), Some(env.clone()));

    replace(&path, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.300.1/24\n");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while log.count("FLANNEL_SUBNET: invalid CIDR") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the broken key is named within 3 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // more polls of the same broken file
    assert_eq!(log.count("FLANNEL_SUBNET: invalid CIDR"), 1, "logged once");
    assert!(!rx.has_changed().expect("task alive"), "a broken file publishes nothing");
    assert_eq!(watch.current(), Some(env), "the previous lease is kept");

    // Still following after the broken file.
    replace(&path, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.8.1/24\n");
    let env = next_change(&mut rx).await.expect("a lease");
    assert_eq!(env.subnets, ["10.244.8.0/24".parse().expect("cidr")]);

    shutdown.cancel();
}

#[tokio::test]
async fn subnet_watch_reads_an_existing_file_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("subnet.env");
    std::fs::write(&path, "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1/24\n").expect("write");
    let shutdown = CancellationToken::new();
    let watch = SubnetWatch::start(path, Duration::from_secs(1), shutdown.clone());
    let env = watch.current().expect("read synchronously by start");
    assert_eq!(env.networks, ["10.42.0.0/16".parse().expect("cidr")]);
    shutdown.cancel();
}
