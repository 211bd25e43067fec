//! kubenat: a drop-in replacement for kube-proxy that turns Services and EndpointSlices into
//! iptables NAT rules identical to kube-proxy's, applied atomically with `iptables-restore`.
//!
//! # Layout
//! - `model`: domain types (service ports, endpoints, `ClusterState`, `NodeConfig`).
//! - `k8s`: the only place that knows Kubernetes API types; converts objects into `model`.
//! - `flannel`: reads and follows flannel's `subnet.env` (cluster and local pod CIDRs).
//! - `config`: kube-proxy's `KubeProxyConfiguration` and flags (decoded, defaulted, overlaid and
//!   validated as kube-proxy does; one flag definition for every command), the config-file
//!   watch, and the options → per-family `NodeConfig`.
//! - `sync`: the daemon's level-triggered sync loop (render → plan → apply).
//! - `startup`: startup requirement checks (br_netfilter, ip_forward, route_localnet, backend)
//!   and the process's OOM score.
//! - `metrics`, `health`, `healthcheck`: kube-proxy-compatible metrics, /healthz, /livez and
//!   healthCheckNodePort servers.
//! - `conntrack`: stale UDP flow cleanup.
//! - `userspace`: the legacy userspace proxy's parts (balancer, port allocator, TCP relay with a
//!   splice pipe pool, UDP relay, port claims, host IP); its portal rules are rendered by
//!   `iptables::render::userspace`.
//! - `iptables::ruleset`: the typed ruleset (tables, chains, rules).
//! - `iptables::chain_names`: every chain name, fixed and hashed.
//! - `iptables::render`: pure `render(&ClusterState, &NodeConfig) -> Ruleset`, plus the
//!   built-in chain jumps (`jump_rules`).
//! - `iptables::write` / `iptables::parse`: restore text out, save/restore text in.
//! - `iptables::check`: jump-consistency checker.
//! - `iptables::diff`: semantic diff of two dumps.
//! - `iptables::trace`: packet tracer over a parsed ruleset.
//! - `iptables::exec`: the `Iptables` trait and the real `iptables-restore`/`-save` binaries.
//! - `iptables::plan`: partial syncs (changed chains; big chains edited rule by rule).
//! - `iptables::chunks`: nft restores in bottom-up pieces of at most 500 chains.
//! - `iptables::cleanup`: `--cleanup` and the mode-switch cleanup plans.
//! - `iptables::fake`: an in-memory `Iptables` that behaves like the kernel (tests, `--dry-run`).
//! - `iptables::apply`: the one applier every caller writes through (daemon syncs, `kubenat
//!   apply`): full (read back, missing jumps, stale chains, canaries, the other mode's chains,
//!   nft pieces) and partial applies.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod conntrack;
pub mod flannel;
pub mod health;
pub mod healthcheck;
pub mod iptables;
pub mod k8s;
pub mod metrics;
pub mod model;
pub mod startup;
pub mod sync;
pub mod userspace;
