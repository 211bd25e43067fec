//! Offline inspection of rulesets: reads what the core produces and what `iptables-save`
//! prints, never changes anything.
//!
//! - `diff`: semantic diff of two dumps.
//! - `trace`: packet tracer over a parsed ruleset.
//! - `check`: jump-consistency checker.
//! - `explain`: why a Service does (not) work on a node, from desired and observed state.

pub mod check;
pub mod diff;
pub mod explain;
pub mod trace;

#[cfg(test)]
mod tests;
