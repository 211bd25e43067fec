//! Follows flannel's `subnet.env` by polling its path (flannel replaces it by rename, so the
//! content is compared, never the inode), publishes each new lease, keeps the last good value
//! through a missing or broken file, and cross-checks the lease against the Node's podCIDRs.
//! Parsing is `subnet_env`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::subnet_env::{self, SubnetEnv};

/// How often the file is read by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest poll interval accepted (a zero interval would spin).
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The latest good `subnet.env`, kept current by a polling task.
#[derive(Debug, Clone)]
pub struct SubnetWatch {
    rx: watch::Receiver<Option<SubnetEnv>>,
}

impl SubnetWatch {
    /// Reads `path` once now (so [`current`](Self::current) is filled at once when the file is
    /// there), then spawns a task that re-reads it every `interval` until `shutdown`. Must be
    /// called inside a Tokio runtime.
    pub fn start(path: PathBuf, interval: Duration, shutdown: CancellationToken) -> SubnetWatch {
        let mut poller = Poller::new(path);
        let first = std::fs::read_to_string(&poller.path);
        poller.observe(first);
        let (tx, rx) = watch::channel(poller.current.clone());
        tokio::spawn(poll(poller, tx, interval.max(MIN_INTERVAL), shutdown));
        SubnetWatch { rx }
    }

    /// The last successfully parsed file, `None` until flannel has written one.
    pub fn current(&self) -> Option<SubnetEnv> {
        self.rx.borrow().clone()
    }

    /// A receiver whose `changed()` fires for each value published after `start` returned (a
    /// new lease, not a rewrite with the same content); read it with `borrow_and_update`.
    pub fn subscribe(&self) -> watch::Receiver<Option<SubnetEnv>> {
        self.rx.clone()
    }
}

async fn poll(
    mut poller: Poller,
    tx: watch::Sender<Option<SubnetEnv>>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; `start` has just read the file
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let read = tokio::fs::read_to_string(&poller.path).await;
        if let Some(env) = poller.observe(read) {
            tx.send_replace(Some(env));
        }
    }
}

/// What the last read of the file showed, so each situation is logged once.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileState {
    /// Not read yet.
    Unknown,
    /// Not there.
    Missing,
    /// Read, whatever its content.
    Present,
    /// Reading failed with this error (other than not found).
    Unreadable(String),
}

/// The polling state machine, free of timers and channels.
#[derive(Debug)]
struct Poller {
    path: PathBuf,
    /// The last good value.
    current: Option<SubnetEnv>,
    /// The text last read (parsed or not), to act only on change.
    last_text: Option<String>,
    state: FileState,
}

impl Poller {
    fn new(path: PathBuf) -> Poller {
        Poller { path, current: None, last_text: None, state: FileState::Unknown }
    }

    /// Takes one read of the file; returns the new value when it differs from the last good one.
    fn observe(&mut self, read: io::Result<String>) -> Option<SubnetEnv> {
        let file = self.path.display();
        let text = match read {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                if self.state != FileState::Missing {
                    match self.current {
                        None => info!(file = %file, "waiting for flannel's subnet.env at {file}"),
                        Some(_) => {
                            info!(file = %file, "flannel's subnet.env at {file} is gone; keeping the last lease")
                        }
                    }
                }
                self.state = FileState::Missing;
                self.last_text = None;
                return None;
            }
            Err(err) => {
                let error = err.to_string();
                if self.state != FileState::Unreadable(error.clone()) {
                    warn!(file = %file, error, "cannot read flannel's subnet.env; keeping the last lease");
                }
                self.state = FileState::Unreadable(error);
                return None;
            }
        };
        if self.state == FileState::Missing {
            info!(file = %file, "found flannel's subnet.env at {file}");
        }
        self.state = FileState::Present;
        if self.last_text.as_deref() == Some(text.as_str()) {
            return None;
        }
        let parsed = subnet_env::parse(&text);
        self.last_text = Some(text);
        match parsed {
            Ok(env) if self.current.as_ref() == Some(&env) => None,
            Ok(env) => {
                log_lease(&self.path, self.current.as_ref(), &env);
                self.current = Some(env.clone());
                Some(env)
            }
            Err(err) => {
                warn!(file = %file, error = %err, "flannel's subnet.env is invalid; keeping the last lease");
                None
            }
        }
    }
}

fn log_lease(path: &Path, old: Option<&SubnetEnv>, new: &SubnetEnv) {
    let (networks, subnets) = (list(&new.networks), list(&new.subnets));
    match old {
        None => info!(file = %path.display(), networks, subnets, mtu = ?new.mtu, "read flannel's subnet.env"),
        Some(old) => info!(
            file = %path.display(),
            networks,
            subnets,
            old_subnets = list(&old.subnets),
            "flannel's subnet.env changed (a new lease)"
        ),
    }
}

fn list(nets: &[IpNet]) -> String {
    nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// A warning when flannel's lease (`FLANNEL_SUBNET` / `FLANNEL_IPV6_SUBNET`, host bits cleared)
/// is not among the Node's `spec.podCIDRs` of the same family; `None` when they agree or either
/// side is unknown for every family.
pub fn check_pod_cidr(env: &SubnetEnv, node_pod_cidrs: &[IpNet]) -> Option<String> {
    let mut mismatches = Vec::new();
    for subnet in env.subnets.iter().map(IpNet::trunc) {
        let same_family =
            |n: &&IpNet| matches!((n, subnet), (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_)));
        let node: Vec<IpNet> = node_pod_cidrs.iter().filter(same_family).map(IpNet::trunc).collect();
        if node.is_empty() || node.contains(&subnet) {
            continue;
        }
        let key = if subnet.addr().is_ipv4() { "FLANNEL_SUBNET" } else { "FLANNEL_IPV6_SUBNET" };
        mismatches.push(format!("{key} {subnet} is not the Node's spec.podCIDRs {}", list(&node)));
    }
    if mismatches.is_empty() {
        return None;
    }
    Some(format!(
        "flannel's lease and this Node disagree: {}. Pods get addresses from flannel's subnet and kubenat follows \
         it, while the rest of the cluster expects the Node's podCIDR. Usually flanneld does not run with \
         --kube-subnet-mgr or kept an old lease after the Node was re-created: fix the lease and restart flanneld",
        mismatches.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE_1: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n";
    const LEASE_2: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.2.1/24\n";

    fn missing() -> io::Result<String> {
        Err(io::Error::from(io::ErrorKind::NotFound))
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("test CIDR")).collect()
    }

    fn subnets(poller: &Poller) -> Option<Vec<IpNet>> {
        poller.current.as_ref().map(|e| e.subnets.clone())
    }

    #[test]
    fn publishes_only_new_leases_and_keeps_the_last_good_one() {
        let mut p = Poller::new("/run/flannel/subnet.env".into());
        assert_eq!(p.observe(missing()), None);
        assert_eq!(p.state, FileState::Missing);
        let first = p.observe(Ok(LEASE_1.into())).expect("first lease published");
        assert_eq!(first.subnets, nets(&["10.244.1.0/24"]));
        assert_eq!(p.observe(Ok(LEASE_1.into())), None, "same text");
        assert_eq!(p.observe(Ok(format!("# rewritten\n{LEASE_1}"))), None, "same lease, other text");
        assert_eq!(p.observe(Ok("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=garbage\n".into())), None);
        assert_eq!(subnets(&p), Some(nets(&["10.244.1.0/24"])), "broken file keeps the last lease");
        assert_eq!(p.observe(missing()), None);
        assert_eq!(subnets(&p), Some(nets(&["10.244.1.0/24"])), "missing file keeps the last lease");
        let second = p.observe(Ok(LEASE_2.into())).expect("new lease published");
        assert_eq!(second.subnets, nets(&["10.244.2.0/24"]));
    }

    #[test]
    fn a_broken_file_fixed_with_the_old_content_publishes_nothing() {
        let mut p = Poller::new("x".into());
        assert!(p.observe(Ok(LEASE_1.into())).is_some());
        assert_eq!(p.observe(Ok("FLANNEL_MTU=big\nFLANNEL_NETWORK=10.0.0.0/8\n".into())), None);
        assert_eq!(p.observe(Ok(LEASE_1.into())), None);
        assert!(p.observe(Ok(LEASE_2.into())).is_some());
    }

    #[test]
    fn read_errors_are_remembered_not_fatal() {
        let mut p = Poller::new("x".into());
        assert_eq!(p.observe(Err(io::Error::from(io::ErrorKind::PermissionDenied))), None);
        assert!(matches!(p.state, FileState::Unreadable(_)));
        assert!(p.observe(Ok(LEASE_1.into())).is_some());
        assert_eq!(p.state, FileState::Present);
    }

    #[test]
    fn pod_cidr_cross_check() {
        let env = |text: &str| subnet_env::parse(text).expect("valid");
        let v4 = env(LEASE_1);
        let dual = env("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n\
                        FLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_IPV6_SUBNET=fd00:0:0:1::1/64\n");
        assert_eq!(check_pod_cidr(&v4, &nets(&["10.244.1.0/24"])), None);
        assert_eq!(check_pod_cidr(&v4, &nets(&["10.244.1.7/24"])), None, "host bits do not matter");
        assert_eq!(check_pod_cidr(&v4, &[]), None, "Node podCIDRs unknown");
        assert_eq!(check_pod_cidr(&SubnetEnv::default(), &nets(&["10.244.1.0/24"])), None, "no lease");
        assert_eq!(check_pod_cidr(&v4, &nets(&["fd00:0:0:9::/64"])), None, "no IPv4 podCIDR to compare");
        assert_eq!(check_pod_cidr(&dual, &nets(&["10.244.1.0/24", "fd00:0:0:1::/64"])), None);

        let warning = check_pod_cidr(&v4, &nets(&["10.244.2.0/24"])).expect("mismatch");
        assert!(
            warning.contains("FLANNEL_SUBNET 10.244.1.0/24 is not the Node's spec.podCIDRs 10.244.2.0/24"),
            "{warning}"
        );
        let warning = check_pod_cidr(&dual, &nets(&["10.244.1.0/24", "fd00:0:0:2::/64"])).expect("v6 mismatch");
        assert!(warning.contains("FLANNEL_IPV6_SUBNET fd00:0:0:1::/64 is not the Node's spec.podCIDRs fd00:0:0:2::/64"));
        assert!(!warning.contains("FLANNEL_SUBNET 10"), "{warning}");
    }
}
