//! The pure core: the model's services turned into a typed ruleset and into text, and the text
//! of `iptables-save` read back. No I/O happens here.
//!
//! - `ruleset`: the typed ruleset (tables, chains, rules, argument storage, comments).
//! - `chain_names`: every chain name kubenat writes, fixed and hashed.
//! - `render`: `render(&ClusterState, &NodeConfig) -> Ruleset`, the built-in chain jumps, the
//!   nft dispatch tree and the userspace portals.
//! - `write` / `parse`: restore text out; save and restore text in.
//! - `canonical`: one spelling of a rule, so ours and `iptables-save`'s compare equal.
//! - `backend`: the iptables backends (nft, legacy) and what differs between them.
//! - `plan`: partial syncs (changed chains; big chains edited rule by rule).
//! - `chunks`: nft restores in bottom-up pieces of at most 500 chains.
//! - `extras`: what a full apply adds to the rendered rules (missing jumps, stale chains,
//!   canaries) and the count of what an apply writes.

pub mod backend;
pub mod canonical;
pub mod chain_names;
pub mod chunks;
pub mod extras;
pub mod parse;
pub mod plan;
pub mod render;
pub mod ruleset;
pub mod write;
