//! Stale UDP conntrack entries: which flows to delete after a sync (pure planning in
//! [`stale_udp_flows`]) and deleting them — with the `conntrack` CLI ([`ExecConntrack`]) or an
//! in-memory flow table ([`FakeConntrack`]). Conntrack *tuning* (nf_conntrack_max) is not here.
//!
//! Only UDP is cleaned (TCP flows end with FIN/RST or time out), as kube-proxy.

mod plan;

pub use plan::stale_udp_flows;

use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::model::{IpFamily, Protocol};

/// How long one `conntrack -D` may run before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// What conntrack-tools prints (and exits 1 with) when nothing matched.
const NOTHING_DELETED: &str = "0 flow entries have been deleted";

/// Errors deleting conntrack entries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The filter would match every flow of its protocol, or names addresses of another
    /// family than the one requested. A bug in the caller; not retryable.
    #[error("refusing conntrack filter {filter} for {family}: {reason}")]
    BadFilter {
        /// The filter.
        filter: FlowFilter,
        /// The family it was used with.
        family: IpFamily,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The program could not be started (not installed, not executable). Not retryable until
    /// the node is fixed.
    #[error("cannot run `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// The spawn error.
        #[source]
        source: std::io::Error,
    },
    /// The program failed (exit status other than "nothing matched"). Retryable.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Exit status as printed by the OS.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The program did not finish within its timeout and was killed. Retryable.
    #[error("`{command}` did not finish within {timeout:?}")]
    Timeout {
        /// The command line.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// Waiting for the program failed. Retryable.
    #[error("waiting for `{command}` failed")]
    Wait {
        /// The command line.
        command: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which conntrack entries to delete: all given fields must match (`conntrack -D` filter).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowFilter {
    /// Layer-4 protocol (`-p`).
    pub protocol: Protocol,
    /// Original destination address (`--orig-dst`): a service IP.
    pub orig_dst: Option<IpAddr>,
    /// Original destination port (`--orig-port-dst`): a service port or NodePort.
    pub orig_dport: Option<u16>,
    /// The flow was DNATed to this address (`--dst-nat`): an endpoint IP.
    pub dnat_to: Option<IpAddr>,
}

impl FlowFilter {
    /// UDP flows to `ip:port`, optionally only those DNATed to `endpoint`.
    pub fn udp_to(ip: IpAddr, port: u16, endpoint: Option<IpAddr>) -> Self {
        FlowFilter { protocol: Protocol::Udp, orig_dst: Some(ip), orig_dport: Some(port), dnat_to: endpoint }
    }

    /// UDP flows to any address on `node_port`, optionally only those DNATed to `endpoint`.
    pub fn udp_node_port(node_port: u16, endpoint: Option<IpAddr>) -> Self {
        FlowFilter { protocol: Protocol::Udp, orig_dst: None, orig_dport: Some(node_port), dnat_to: endpoint }
    }

    /// Rejects filters that are unsafe or meaningless for `family`.
    pub fn validate(&self, family: IpFamily) -> Result<()> {
        let reason = if self.orig_dst.is_none() && self.orig_dport.is_none() {
            Some("no destination address or port (it would match every flow)")
        } else if [self.orig_dst, self.dnat_to].iter().flatten().any(|ip| !family.contains(ip)) {
            Some("address of another family")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::BadFilter { filter: self.clone(), family, reason }),
            None => Ok(()),
        }
    }

    /// `conntrack` arguments that delete the matching entries of `family`.
    pub fn delete_args(&self, family: IpFamily) -> Vec<String> {
        let mut args: Vec<String> = ["-D", "-f", family.to_string().as_str(), "-p", self.protocol.as_str()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(ip) = self.orig_dst {
            args.extend(["--orig-dst".to_string(), ip.to_string()]);
        }
        if let Some(port) = self.orig_dport {
            args.extend(["--orig-port-dst".to_string(), port.to_string()]);
        }
        if let Some(ip) = self.dnat_to {
            args.extend(["--dst-nat".to_string(), ip.to_string()]);
        }
        args
    }

    /// Whether `flow` matches, with `conntrack -D`'s semantics.
    pub fn matches(&self, flow: &Flow) -> bool {
        flow.protocol == self.protocol
            && self.orig_dst.is_none_or(|ip| flow.orig_dst.ip() == ip)
            && self.orig_dport.is_none_or(|port| flow.orig_dst.port() == port)
            && self.dnat_to.is_none_or(|ip| flow.is_dnat() && flow.reply_src.ip() == ip)
    }
}

impl fmt::Display for FlowFilter {
    /// `udp dst=10.96.0.10 dport=53 dnat=10.244.1.5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.protocol.as_str())?;
        if let Some(ip) = self.orig_dst {
            write!(f, " dst={ip}")?;
        }
        if let Some(port) = self.orig_dport {
            write!(f, " dport={port}")?;
        }
        if let Some(ip) = self.dnat_to {
            write!(f, " dnat={ip}")?;
        }
        Ok(())
    }
}

/// One conntrack entry, as much of it as filters look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Layer-4 protocol.
    pub protocol: Protocol,
    /// Original direction source (the client).
    pub orig_src: SocketAddr,
    /// Original direction destination (service IP:port, or node IP:NodePort).
    pub orig_dst: SocketAddr,
    /// Reply direction source: the endpoint when the flow was DNATed, else `orig_dst`.
    pub reply_src: SocketAddr,
}

impl Flow {
    /// Whether the flow was destination-NATed (its reply comes from another address).
    pub fn is_dnat(&self) -> bool {
        self.reply_src.ip() != self.orig_dst.ip()
    }

    fn family(&self) -> IpFamily {
        IpFamily::of(&self.orig_dst.ip())
    }
}

/// Deletes conntrack entries. Blocking: async callers should use `spawn_blocking`.
pub trait Conntrack {
    /// Deletes the entries of `family` matching `filter`; returns how many were deleted
    /// (0 when none matched — not an error).
    fn delete(&self, family: IpFamily, filter: &FlowFilter) -> Result<usize>;
}

/// The `conntrack` CLI (conntrack-tools 1.4.x), run as argv without a shell, optionally
/// inside a network namespace (`ip netns exec`).
#[derive(Debug, Clone, Default)]
pub struct ExecConntrack {
    /// Network namespace to run in; `None` for the current one.
    pub netns: Option<String>,
}

impl Conntrack for ExecConntrack {
    fn delete(&self, family: IpFamily, filter: &FlowFilter) -> Result<usize> {
        filter.validate(family)?;
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns.as_str()].map(String::from));
        }
        argv.push("conntrack".to_string());
        argv.extend(filter.delete_args(family));
        let command = argv.join(" ");
        let (status, stderr) = run(&argv, &command)?;
        let deleted = deleted_count(&stderr);
        tracing::debug!(%command, %status, ?deleted, "conntrack delete");
        match (status.success(), deleted) {
            (true, Some(n)) => Ok(n),
            (true, None) => Ok(0),
            (false, Some(0)) if stderr.contains(NOTHING_DELETED) => Ok(0),
            (false, _) => Err(Error::Failed { command, status: status.to_string(), stderr: stderr.trim().to_string() }),
        }
    }
}

/// Runs `argv` with stdout discarded (conntrack lists every deleted entry there) and stderr
/// captured; kills it after [`COMMAND_TIMEOUT`].
fn run(argv: &[String], command: &str) -> Result<(std::process::ExitStatus, String)> {
    let (program, args) = argv.split_first().ok_or_else(|| Error::Spawn {
        command: command.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
    })?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn { command: command.to_string(), source })?;
    let wait_err = |source| Error::Wait { command: command.to_string(), source };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(wait_err)? {
            break status;
        }
        if started.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Timeout { command: command.to_string(), timeout: COMMAND_TIMEOUT });
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        // A short summary line; reading after exit cannot block.
        pipe.read_to_string(&mut stderr).map_err(wait_err)?;
    }
    Ok((status, stderr))
}

/// `N` from conntrack's "… N flow entries have been deleted." summary.
fn deleted_count(stderr: &str) -> Option<usize> {
    stderr.lines().find_map(|line| {
        let head = line.split(" flow entries have been deleted").next().filter(|h| h.len() < line.len())?;
        head.rsplit([' ', ':']).next()?.trim().parse().ok()
    })
}

/// An in-memory conntrack table with `conntrack -D` semantics, recording every call
/// (the syncer's tests, `--dry-run`).
#[derive(Debug, Default)]
pub struct FakeConntrack {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    flows: Vec<Flow>,
    calls: Vec<(IpFamily, FlowFilter)>,
}

impl FakeConntrack {
    /// An empty table.
    pub fn new() -> Self {
        FakeConntrack::default()
    }

    /// A table holding `flows`.
    pub fn with_flows(flows: Vec<Flow>) -> Self {
        FakeConntrack { state: Mutex::new(FakeState { flows, calls: Vec::new() }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one entry.
    pub fn add_flow(&self, flow: Flow) {
        self.state().flows.push(flow);
    }

    /// The entries still present.
    pub fn flows(&self) -> Vec<Flow> {
        self.state().flows.clone()
    }

    /// Every `delete` call so far, in order.
    pub fn calls(&self) -> Vec<(IpFamily, FlowFilter)> {
        self.state().calls.clone()
    }
}

impl Conntrack for FakeConntrack {
    fn delete(&self, family: IpFamily, filter: &FlowFilter) -> Result<usize> {
        filter.validate(family)?;
        let mut state = self.state();
        state.calls.push((family, filter.clone()));
        let before = state.flows.len();
        state.flows.retain(|f| !(f.family() == family && filter.matches(f)));
        Ok(before - state.flows.len())
    }
}

#[cfg(test)]
mod tests;
