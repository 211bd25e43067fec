//! One module per subcommand: clap arguments plus a `run` that returns the exit code.

pub mod apply;
pub mod common;
pub mod daemon;
pub mod diff;
pub mod explain;
pub mod logging;
pub mod render;
pub mod trace;
