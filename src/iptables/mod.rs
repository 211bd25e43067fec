//! Everything iptables: typed rules, naming, rendering, text in and out, analysis, execution.

pub mod apply;
pub mod chain_names;
pub mod check;
pub mod chunks;
pub mod cleanup;
pub mod diff;
pub mod exec;
pub mod fake;
pub mod parse;
pub mod plan;
pub mod render;
pub mod ruleset;
pub mod trace;
pub mod write;
