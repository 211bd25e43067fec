//! Fault and load tests on the real kernel: the `kubenat` daemon in a lab's node namespace
//! against the test API server, a traffic probe sending fresh TCP connections and UDP requests
//! to Services from a client pod, and one injected fault per test — random churn, `kill -9`
//! mid-sync, an unreachable API server whose history is compacted meanwhile, failing
//! `iptables-restore`, a held xtables lock next to another agent rewriting its own chains, and a
//! flushed nat table. Services that keep a ready endpoint must see no probe failure (the nat
//! flush excepted, within its measured window), and every test ends with the kernel's rules
//! equal to `kubenat render` of the final objects. Userspace mode: `userspace.rs`.
//! Needs root (skips otherwise, fails under CI=true). Run with `--nocapture` for the counts.
//!
//! Knobs (for `scripts/soak.sh`): `KUBENAT_SOAK_CHURN_EVENTS` (default 1000),
//! `KUBENAT_SOAK_CHURN_RATE` (events/s, default 50), `KUBENAT_SOAK_OUTAGE_SECS` (default 8),
//! `KUBENAT_SOAK_SEED` (churn RNG seed, default fixed).

// The integration tests' shared support (this crate lives in a directory of its own).

mod api_outage;
mod churn;
mod env;
mod kernel;
mod restart;
mod userspace;

/// A number from the environment variable `name`, else `default`.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}
