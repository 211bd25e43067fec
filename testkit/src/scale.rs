//! Shared pieces of the ignored scale measurements (`tests/scale_*.rs`, run by
//! `scripts/bench-daemon.sh` in a release build): the knobs, the synthetic cluster (N ClusterIP
//! services × E endpoints that never answer), the daemon's resources read from `/proc`, and the
//! report file every measurement appends its summary to.
//!
//! Knobs (environment): `KUBENAT_SCALE_SERVICES` (10000), `KUBENAT_SCALE_ENDPOINTS` (10),
//! `KUBENAT_SCALE_BACKEND` (`nft` or `legacy`), `KUBENAT_SCALE_REPORT` (a file the summary is
//! appended to); each test documents its own further knobs.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::apiserver::ApiServer;
use super::objects::{self, Port};

/// How long the first full sync of the whole state may take (a 20k-service nft restore is ≈1 min
/// on an idle machine, many times that on a loaded one).
pub const FIRST_SYNC: Duration = Duration::from_secs(1800);
/// The synthetic services' target (endpoint) port.
pub const BACKEND_PORT: u16 = 8080;

/// The knob `name` as a number, `default` when unset or not a number.
pub fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `KUBENAT_SCALE_SERVICES` (10000).
pub fn services() -> usize {
    knob("KUBENAT_SCALE_SERVICES", 10_000)
}

/// `KUBENAT_SCALE_ENDPOINTS` (10), at least 1.
pub fn endpoints() -> usize {
    knob("KUBENAT_SCALE_ENDPOINTS", 10).max(1)
}

/// `KUBENAT_SCALE_BACKEND`: `legacy`, else `nft`.
pub fn backend() -> &'static str {
    match std::env::var("KUBENAT_SCALE_BACKEND").as_deref() {
        Ok("legacy") => "legacy",
        _ => "nft",
    }
}

/// The i-th synthetic ClusterIP: spread over 10.96.0.0/12 below 10.110.0.0 (probes use 10.111/16).
pub fn cluster_ip(i: usize) -> Ipv4Addr {
    let n = u32::try_from(i).expect("service count fits u32");
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + n)
}

/// The i-th synthetic service's name.
pub fn service_name(i: usize) -> String {
    format!("svc-{i}")
}

/// The synthetic services' one port: `http` 80 → [`BACKEND_PORT`]/TCP.
pub fn ports() -> [Port; 1] {
    [Port::tcp("http", 80, BACKEND_PORT)]
}

/// A ClusterIP service with [`ports`].
pub fn service(name: &str, ip: Ipv4Addr) -> Value {
    objects::service(name, ip, &ports())
}

/// `service`'s EndpointSlice: ready endpoints at `addresses` on another node.
pub fn slice(service: &str, addresses: &[Ipv4Addr]) -> Value {
    objects::slice(service, &objects::ready_on(addresses, "node-2"), &ports())
}

/// Synthetic endpoints that never answer (outside the lab's pod CIDR, nothing routes them):
/// 10.128.0.0 onwards, `count` per service.
pub fn fake_endpoints(service: usize, count: usize) -> Vec<Ipv4Addr> {
    (0..count)
        .map(|j| {
            let k = u32::try_from(service * count + j).expect("endpoint count fits u32");
            Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + k)
        })
        .collect()
}

/// Writes `services` ClusterIP services named [`service_name`] with [`fake_endpoints`]
/// (`endpoints` each) to `api`; returns the seconds it took.
pub fn load(api: &ApiServer, services: usize, endpoints: usize) -> f64 {
    let started = Instant::now();
    for i in 0..services {
        let name = service_name(i);
        api.apply(service(&name, cluster_ip(i)));
        api.apply(slice(&name, &fake_endpoints(i, endpoints)));
    }
    started.elapsed().as_secs_f64()
}

/// (VmRSS, VmHWM) of `pid` in MiB (NaN when unreadable).
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// utime, stime, cutime, cstime of `pid` in seconds (`/proc/PID/stat`, 100 ticks a second).
fn cpu_times(pid: u32) -> Option<[f64; 4]> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<f64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
    // utime is field 14, i.e. index 11 after the state field (index 0 = field 3).
    let t = fields.get(11..15)?;
    Some([t[0] / 100.0, t[1] / 100.0, t[2] / 100.0, t[3] / 100.0])
}

/// CPU seconds used by `pid` and its waited-for children (utime + stime + cutime + cstime).
pub fn cpu_seconds(pid: u32) -> f64 {
    cpu_times(pid).map_or(f64::NAN, |t| t.iter().sum())
}

/// CPU seconds used by `pid` itself, all its threads, without its children (utime + stime).
pub fn own_cpu_seconds(pid: u32) -> f64 {
    cpu_times(pid).map_or(f64::NAN, |t| t[0] + t[1])
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), for the report: these measurements
/// are only comparable on an equally busy machine.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Prints `report` and appends it to `KUBENAT_SCALE_REPORT` when that is set.
pub fn report(report: &str) {
    print!("{report}");
    if let Ok(path) = std::env::var("KUBENAT_SCALE_REPORT") {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("report file");
        file.write_all(report.as_bytes()).expect("write report");
    }
}

/// The `q` quantile (0..=1) of a histogram given as cumulative `(le, count)` buckets in
/// ascending `le` (`+Inf` last), interpolated linearly inside the bucket as Prometheus'
/// `histogram_quantile` does; NaN without observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let Some(&(_, total)) = buckets.last() else { return f64::NAN };
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut below = (0.0, 0.0); // (upper bound, cumulative count) of the previous bucket
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return below.0; // the highest finite bound, as Prometheus answers
            }
            let inside = count - below.1;
            let fraction = if inside > 0.0 { (rank - below.1) / inside } else { 1.0 };
            return below.0 + (le - below.0) * fraction;
        }
        below = (le, count);
    }
    below.0
}

/// The smallest bucket bound every observation is at or below (`+Inf` when some are above the
/// highest finite bound, NaN without observations).
pub fn histogram_max_bound(buckets: &[(f64, f64)]) -> f64 {
    let Some(&(_, total)) = buckets.last() else { return f64::NAN };
    if total <= 0.0 {
        return f64::NAN;
    }
    buckets.iter().find(|(_, count)| *count >= total).map_or(f64::INFINITY, |(le, _)| *le)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let buckets = [(0.0, 0.0), (0.25, 0.0), (0.5, 50.0), (1.0, 100.0), (f64::INFINITY, 100.0)];
        assert!((histogram_quantile(0.5, &buckets) - 0.5).abs() < 1e-9);
        assert!((histogram_quantile(0.25, &buckets) - 0.375).abs() < 1e-9);
        assert!((histogram_quantile(0.99, &buckets) - 0.99).abs() < 1e-9);
        assert_eq!(histogram_max_bound(&buckets), 1.0);
        assert!(histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]).is_nan());
        assert_eq!(histogram_max_bound(&[(1.0, 1.0), (f64::INFINITY, 2.0)]), f64::INFINITY);
    }
}
