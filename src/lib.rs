//! kubenat: a drop-in replacement for kube-proxy that turns Services and EndpointSlices into
//! iptables NAT rules identical to kube-proxy's, applied atomically with `iptables-restore`.
//!
//! # Layout
//! Rooms by stage; arrows point down this list only (a room uses the rooms below it, never the
//! ones above).
//! - `cli` (binary only): the command line — the daemon's flags and the offline tools.
//! - `daemon`: the node daemon as a library: `run(config, shutdown)` wires the rooms below.
//! - `sync`: the daemon's level-triggered sync loop (render → plan → apply).
//! - `config`: kube-proxy's `KubeProxyConfiguration` and flags (decoded, defaulted, overlaid and
//!   validated as kube-proxy does; one flag definition for every command), the config-file
//!   watch, and the options → per-family `NodeConfig`.
//! - `k8s`: the only place that knows Kubernetes API types; watches and converts into `model`.
//! - `flannel`: reads and follows flannel's `subnet.env` (cluster and local pod CIDRs).
//! - `startup`: startup requirement checks (br_netfilter, ip_forward, route_localnet, backend)
//!   and the process's OOM score.
//! - `metrics`, `health`, `healthcheck`: kube-proxy-compatible metrics, /healthz, /livez and
//!   healthCheckNodePort servers.
//! - `conntrack`: UDP conntrack reconciliation as kube-proxy's (pure rule, ctnetlink I/O, fake).
//! - `userspace`: the legacy userspace proxy's parts (balancer, port allocator, TCP relay with a
//!   splice pipe pool, UDP relay, port claims, host IP); its portal rules are rendered by
//!   `rules::render::userspace`.
//! - `inspect`: offline analysis of rulesets — `diff` (semantic), `trace` (packet tracer),
//!   `check` (jump consistency).
//! - `apply`: the apply stage, the only I/O on rules — `exec` (the `Iptables` trait, the real
//!   binaries, backend detection), `applier` (the one applier every caller writes through),
//!   `cleanup` (`--cleanup`, mode switches), `fake` (an in-memory kernel for tests and
//!   `--dry-run`).
//! - `rules`: the pure core — `ruleset` (typed rules), `chain_names`, `render`, `write` /
//!   `parse` (text out and in), `canonical` (one spelling per rule), `backend`, `plan` (partial
//!   syncs), `chunks` (nft pieces), `extras` (what a full apply adds).
//! - `model`: the value types everything speaks — service ports, endpoints, `ClusterState`,
//!   `NodeConfig`, `NodeFacts`, the userspace `PortPlan`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apply;
pub mod config;
pub mod conntrack;
pub mod daemon;
pub mod flannel;
pub mod health;
pub mod healthcheck;
pub mod inspect;
pub mod k8s;
pub mod metrics;
pub mod model;
pub mod rules;
pub mod startup;
pub mod sync;
pub mod userspace;
