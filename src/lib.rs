//! kubenat: a drop-in replacement for kube-proxy that turns Services and EndpointSlices into
//! iptables NAT rules identical to kube-proxy's, applied atomically with `iptables-restore`.
//!
//! # Layout
//! Rooms by stage; a room uses only the rooms listed below it.
//! - `daemon`: the node daemon as a library, `run(config, shutdown)`; wires the rooms below.
//! - `sync`: the level-triggered sync loop (render → plan → apply) and its `Syncer`.
//! - `config`: kube-proxy's configuration file and flags, resolved as kube-proxy does.
//! - `k8s`: the only room that knows Kubernetes API types; watches and converts into `model`.
//! - `flannel`: flannel's `subnet.env`, read and followed.
//! - `host`: host probing: interface addresses (netlink, every sync), iptables version, nfacct.
//! - `inspect`: analysis of rulesets: `diff`, `trace`, `check`; `explain` (why a Service does
//!   not work on a node) also reuses `startup`'s sysctl judgement and `conntrack`'s stale rule.
//! - `startup`: start-up checks and node tuning (conntrack sysctls, route_localnet, OOM score).
//! - `healthcheck`: the healthCheckNodePort servers.
//! - `health`: `/healthz`, `/livez`, `/metrics` and `/configz` servers.
//! - `metrics`: kube-proxy's metrics, registered and recorded.
//! - `conntrack`: stale UDP conntrack flows, planned and deleted.
//! - `userspace`: the legacy userspace proxy (balancer, ports, TCP and UDP relays).
//! - `apply`: the apply stage: `exec` (real binaries), `applier`, `cleanup`, `fake` kernel.
//! - `rules`: the pure core: ruleset, chain names, render, write/parse, plan, nft pieces.
//! - `model`: the value types everything speaks (services, endpoints, node configuration).
//!
//! The binary's `cli` module holds the command line (daemon flags, `render`, `diff`, `trace`,
//! `apply`, `explain`); integration tests share the `kubenat-testkit` crate (`testkit/`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apply;
pub mod config;
pub mod conntrack;
pub mod daemon;
pub mod flannel;
pub mod health;
pub mod healthcheck;
pub mod host;
pub mod inspect;
pub mod k8s;
pub mod metrics;
pub mod model;
pub mod rules;
pub mod startup;
pub mod sync;
pub mod userspace;
