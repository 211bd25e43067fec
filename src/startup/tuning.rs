//! Node tuning at start, as kube-proxy does before it programs anything: conntrack's table size
//! (`nf_conntrack_max` and the hash size), its TCP and UDP timeouts, `tcp_be_liberal`, and
//! `route_localnet` for localhost NodePorts. [`plan`] is pure (settings + CPU count + current
//! values → steps); [`tune`] reads and writes through [`Sysctls`]. Never fatal: a value that
//! cannot be written is one warning and `kubenat_startup_checks_failed{check="<step>"}` = 1.

mod sysctls;

pub use sysctls::{online_cpus, parse_cpu_list, FakeSysctls, ProcSysctls, Sysctls};

use std::time::Duration;

use tracing::{debug, info, warn};

use super::{Sysctl, SysctlValue, ROUTE_LOCALNET};
use crate::metrics::Metrics;

/// kube-proxy's ceiling on the scaled limit (`maxPerCore` × CPUs): 2^20 entries. `min` is not
/// capped.
pub const CONNTRACK_MAX_CAP: i64 = 1 << 20;

/// One value kube-proxy sets at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Knob {
    /// `net.netfilter.nf_conntrack_max` (global: read-only outside the host's network namespace).
    ConntrackMax,
    /// The `nf_conntrack` module's `hashsize` parameter (global, in `/sys`).
    ConntrackHashsize,
    /// `net.netfilter.nf_conntrack_tcp_timeout_established`.
    TcpTimeoutEstablished,
    /// `net.netfilter.nf_conntrack_tcp_timeout_close_wait`.
    TcpTimeoutCloseWait,
    /// `net.netfilter.nf_conntrack_tcp_be_liberal`.
    TcpBeLiberal,
    /// `net.netfilter.nf_conntrack_udp_timeout`.
    UdpTimeout,
    /// `net.netfilter.nf_conntrack_udp_timeout_stream`.
    UdpTimeoutStream,
    /// `net.ipv4.conf.all.route_localnet`.
    RouteLocalnet,
}

impl Knob {
    /// Every value, in the order kube-proxy sets them.
    pub const ALL: [Knob; 8] = [
        Knob::ConntrackMax,
        Knob::ConntrackHashsize,
        Knob::TcpTimeoutEstablished,
        Knob::TcpTimeoutCloseWait,
        Knob::TcpBeLiberal,
        Knob::UdpTimeout,
        Knob::UdpTimeoutStream,
        Knob::RouteLocalnet,
    ];

    /// The step's name, also its `check` label (`route_localnet` shares the startup check's).
    pub fn step(self) -> &'static str {
        match self {
            Knob::ConntrackMax => "nf_conntrack_max",
            Knob::ConntrackHashsize => "nf_conntrack_hashsize",
            Knob::TcpTimeoutEstablished => "nf_conntrack_tcp_timeout_established",
            Knob::TcpTimeoutCloseWait => "nf_conntrack_tcp_timeout_close_wait",
            Knob::TcpBeLiberal => "nf_conntrack_tcp_be_liberal",
            Knob::UdpTimeout => "nf_conntrack_udp_timeout",
            Knob::UdpTimeoutStream => "nf_conntrack_udp_timeout_stream",
            Knob::RouteLocalnet => ROUTE_LOCALNET,
        }
    }

    /// How operators name it: the dotted sysctl, or the module parameter's file.
    pub fn name(self) -> &'static str {
        match self {
            Knob::ConntrackMax => "net.netfilter.nf_conntrack_max",
            Knob::ConntrackHashsize => "/sys/module/nf_conntrack/parameters/hashsize",
            Knob::TcpTimeoutEstablished => "net.netfilter.nf_conntrack_tcp_timeout_established",
            Knob::TcpTimeoutCloseWait => "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
            Knob::TcpBeLiberal => "net.netfilter.nf_conntrack_tcp_be_liberal",
            Knob::UdpTimeout => "net.netfilter.nf_conntrack_udp_timeout",
            Knob::UdpTimeoutStream => "net.netfilter.nf_conntrack_udp_timeout_stream",
            Knob::RouteLocalnet => Sysctl::RouteLocalnet.key(),
        }
    }

    /// The file, relative to the root of the filesystem.
    pub fn path(self) -> String {
        match self {
            Knob::ConntrackHashsize => self.name().trim_start_matches('/').to_string(),
            Knob::RouteLocalnet => Sysctl::RouteLocalnet.path(),
            _ => format!("proc/sys/{}", self.name().replace('.', "/")),
        }
    }

    /// Global to the node: only a process in the initial network namespace may change it. The
    /// others belong to the writer's network namespace.
    pub fn global(self) -> bool {
        matches!(self, Knob::ConntrackMax | Knob::ConntrackHashsize)
    }

    /// kube-proxy only raises these (writes when the current value is below its target).
    fn raise_only(self) -> bool {
        self.global()
    }

    /// The setting that makes kubenat (and kube-proxy) leave this value alone.
    fn leave_alone(self) -> &'static str {
        match self {
            Knob::ConntrackMax | Knob::ConntrackHashsize => "conntrack.maxPerCore: 0 (--conntrack-max-per-core=0)",
            Knob::TcpTimeoutEstablished => {
                "conntrack.tcpEstablishedTimeout: 0s (--conntrack-tcp-timeout-established=0s)"
            }
            Knob::TcpTimeoutCloseWait => "conntrack.tcpCloseWaitTimeout: 0s (--conntrack-tcp-timeout-close-wait=0s)",
            Knob::TcpBeLiberal => "conntrack.tcpBeLiberal: false",
            Knob::UdpTimeout => "conntrack.udpTimeout: 0s",
            Knob::UdpTimeoutStream => "conntrack.udpStreamTimeout: 0s",
            Knob::RouteLocalnet => {
                "iptables.localhostNodePorts: false (--iptables-localhost-nodeports=false), or nodePortAddresses \
                 without 127.0.0.0/8"
            }
        }
    }

    /// The command that sets it by hand.
    fn by_hand(self, value: i64) -> String {
        match self {
            Knob::ConntrackHashsize => format!("echo {value} > {}", self.name()),
            _ => format!("sysctl -w {}={value}", self.name()),
        }
    }
}

/// What to tune, from kube-proxy's configuration (a zero leaves a value alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TuningConfig {
    /// `conntrack.maxPerCore`: entries per CPU; 0 leaves `nf_conntrack_max` and the hash size
    /// alone.
    pub max_per_core: i64,
    /// `conntrack.min`: the floor for the scaled limit.
    pub min: i64,
    /// `conntrack.tcpEstablishedTimeout`.
    pub tcp_established_timeout: Duration,
    /// `conntrack.tcpCloseWaitTimeout`.
    pub tcp_close_wait_timeout: Duration,
    /// `conntrack.tcpBeLiberal`: set `nf_conntrack_tcp_be_liberal` to 1.
    pub tcp_be_liberal: bool,
    /// `conntrack.udpTimeout`.
    pub udp_timeout: Duration,
    /// `conntrack.udpStreamTimeout`.
    pub udp_stream_timeout: Duration,
    /// IPv4 localhost NodePorts are served (iptables mode): `route_localnet` must be 1.
    pub route_localnet: bool,
}

/// The `nf_conntrack_max` kube-proxy wants: `maxPerCore` × `cpus` capped at
/// [`CONNTRACK_MAX_CAP`], or `min` when that is larger than the uncapped product; `None` when
/// `maxPerCore` is 0 (leave it alone) or the result is 0.
pub fn conntrack_max(max_per_core: i64, min: i64, cpus: usize) -> Option<i64> {
    if max_per_core <= 0 {
        return None;
    }
    let scaled = max_per_core.saturating_mul(i64::try_from(cpus).unwrap_or(i64::MAX));
    let max = if scaled > CONNTRACK_MAX_CAP {
        CONNTRACK_MAX_CAP
    } else if scaled > min {
        scaled
    } else {
        min
    };
    (max > 0).then_some(max)
}

/// The values to set for `cfg` on a node with `cpus` CPUs, in kube-proxy's order.
pub fn targets(cfg: &TuningConfig, cpus: usize) -> Vec<(Knob, i64)> {
    let mut out = Vec::new();
    if let Some(max) = conntrack_max(cfg.max_per_core, cfg.min, cpus) {
        out.push((Knob::ConntrackMax, max));
        out.push((Knob::ConntrackHashsize, max / 4));
    }
    // Whole seconds, as kube-proxy truncates; a zero duration leaves the value alone.
    let secs = |d: Duration| (!d.is_zero()).then(|| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let timeouts = [
        (Knob::TcpTimeoutEstablished, secs(cfg.tcp_established_timeout)),
        (Knob::TcpTimeoutCloseWait, secs(cfg.tcp_close_wait_timeout)),
        (Knob::TcpBeLiberal, cfg.tcp_be_liberal.then_some(1)),
        (Knob::UdpTimeout, secs(cfg.udp_timeout)),
        (Knob::UdpTimeoutStream, secs(cfg.udp_stream_timeout)),
        (Knob::RouteLocalnet, cfg.route_localnet.then_some(1)),
    ];
    out.extend(timeouts.into_iter().filter_map(|(knob, value)| value.map(|v| (knob, v))));
    out
}

/// One value to set, with what it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Which value.
    pub knob: Knob,
    /// The value kube-proxy would set.
    pub want: i64,
    /// What it is now.
    pub current: SysctlValue,
}

impl Step {
    /// Whether it must be written: it differs (for the global two: it is lower), or it could not
    /// be read.
    pub fn needs_write(&self) -> bool {
        match self.current {
            SysctlValue::Set(now) if self.knob.raise_only() => now < self.want,
            SysctlValue::Set(now) => now != self.want,
            SysctlValue::Missing | SysctlValue::Unreadable(_) => true,
        }
    }
}

/// The steps for `cfg` on a node with `cpus` CPUs whose values `current` reads; the ones to
/// write are those whose [`Step::needs_write`] holds.
pub fn plan(cfg: &TuningConfig, cpus: usize, current: impl Fn(Knob) -> SysctlValue) -> Vec<Step> {
    targets(cfg, cpus).into_iter().map(|(knob, want)| Step { knob, want, current: current(knob) }).collect()
}

/// What happened to one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It already had the value (or, for the global two, more).
    Unchanged,
    /// It was written.
    Written,
    /// `--dry-run`: it would have been written.
    WouldWrite,
    /// Writing failed; the operator's message (what, why, the fix).
    Failed(String),
}

/// One step and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult {
    /// The step.
    pub step: Step,
    /// What happened.
    pub outcome: Outcome,
}

/// Plans and performs the steps: reads every value, writes those that differ (none with
/// `dry_run`), logs each change at info and each failure once at warn (with a `check` field).
/// Blocking (file I/O).
pub fn tune(cfg: &TuningConfig, cpus: usize, sysctls: &dyn Sysctls, dry_run: bool) -> Vec<StepResult> {
    let results: Vec<StepResult> = plan(cfg, cpus, |knob| sysctls.read(knob))
        .into_iter()
        .map(|step| {
            let outcome = perform(&step, sysctls, dry_run);
            StepResult { step, outcome }
        })
        .collect();
    let count = |f: fn(&Outcome) -> bool| results.iter().filter(|r| f(&r.outcome)).count();
    info!(
        cpus,
        steps = results.len(),
        written = count(|o| *o == Outcome::Written),
        failed = count(|o| matches!(o, Outcome::Failed(_))),
        "node tuning done"
    );
    results
}

fn perform(step: &Step, sysctls: &dyn Sysctls, dry_run: bool) -> Outcome {
    let (name, want, before) = (step.knob.name(), step.want, shown(&step.current));
    if !step.needs_write() {
        debug!(sysctl = name, value = %before, wanted = want, "already tuned");
        return Outcome::Unchanged;
    }
    if dry_run {
        info!(sysctl = name, from = %before, to = want, "--dry-run: would set");
        return Outcome::WouldWrite;
    }
    match sysctls.write(step.knob, want) {
        Ok(()) => {
            info!(sysctl = name, from = %before, to = want, "set");
            Outcome::Written
        }
        Err(err) => {
            let message = failure(step, &err);
            warn!(check = step.knob.step(), "{message}");
            Outcome::Failed(message)
        }
    }
}

/// The operator's message for a failed write: what, why, and the fix.
fn failure(step: &Step, err: &std::io::Error) -> String {
    let (knob, want) = (step.knob, step.want);
    let why = if knob.global() {
        "it is global to the node: only a process in the host's network namespace (hostNetwork) with CAP_NET_ADMIN \
         and a writable /proc/sys and /sys may change it"
    } else if step.current == SysctlValue::Missing && knob != Knob::RouteLocalnet {
        "it does not exist because the nf_conntrack module is not loaded (modprobe nf_conntrack, then restart \
         kubenat)"
    } else {
        "this needs CAP_NET_ADMIN and a writable /proc/sys (a privileged container or an init container)"
    };
    format!(
        "could not set {} to {want} (it is {}): {err}; {why}. Fix: set it on the node ({}), or leave it alone with {}",
        knob.name(),
        shown(&step.current),
        knob.by_hand(want),
        knob.leave_alone()
    )
}

fn shown(value: &SysctlValue) -> String {
    match value {
        SysctlValue::Set(n) => n.to_string(),
        SysctlValue::Missing => "missing".into(),
        SysctlValue::Unreadable(why) => format!("unreadable: {why}"),
    }
}

/// Sets `kubenat_startup_checks_failed{check="<step>"}` for every value kube-proxy would set:
/// 1 where it does not hold now. Only reads; logs at debug (a failure was already warned about
/// by [`tune`]). Returns how many do not hold.
pub fn report_current(cfg: &TuningConfig, cpus: usize, sysctls: &dyn Sysctls, metrics: &Metrics) -> usize {
    let steps = plan(cfg, cpus, |knob| sysctls.read(knob));
    for step in &steps {
        metrics.set_startup_check_failed(step.knob.step(), step.needs_write());
        debug!(check = step.knob.step(), now = %shown(&step.current), wanted = step.want, "node tuning");
    }
    steps.iter().filter(|s| s.needs_write()).count()
}

#[cfg(test)]
mod tests;
