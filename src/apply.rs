//! The apply stage: the only place that runs `iptables-restore` / `iptables-save`.
//!
//! - `exec`: the `Iptables` trait, the real binaries, backend detection and their errors.
//! - `applier`: the one [`Applier`] every caller writes rules through (the daemon's full and
//!   partial syncs, `kubenat apply`): reading the tables back, the extras, the other mode's
//!   chains, nft pieces.
//! - `cleanup`: `--cleanup` and the mode-switch cleanup plans.
//! - `fake`: an in-memory `Iptables` that behaves like the kernel (tests, `--dry-run`).

pub mod applier;
pub mod cleanup;
pub mod exec;
pub mod fake;

pub use self::applier::{apply_once, Applied, Applier, ApplierOptions, Error, History, Mode, Result, StaleChains};
