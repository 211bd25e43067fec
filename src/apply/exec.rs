//! The `Iptables` trait (restore and save text) and `ExecIptables`, which runs the real
//! `iptables-restore`/`iptables-save` binaries (nft or legacy, optionally in a network
//! namespace). Planning what to restore lives in `apply`; this module only moves text.

mod detect;
mod error;
mod run;

use std::str::FromStr;
use std::time::Duration;

use tracing::{debug, trace};

pub use detect::{detect_backend, detect_backend_in};
pub use error::{Error, InputLine, RestoreFailure, Result};

use crate::model::IpFamily;
pub use crate::rules::backend::Backend;
use crate::rules::ruleset::TableName;
use run::{Finished, RunError};

/// Seconds `iptables-restore` waits for the xtables lock (`-w`), as kube-proxy does.
pub const LOCK_WAIT_SECONDS: u32 = 5;
/// Microseconds between lock attempts (`-W`), as kube-proxy does.
pub const LOCK_POLL_MICROS: u32 = 100_000;

/// Options of one `iptables-restore` run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// `--noflush`: keep tables' other chains; only declared chains are flushed.
    pub noflush: bool,
    /// `--counters`: restore packet/byte counters given in the input.
    pub counters: bool,
}

/// Reads and writes whole rulesets as `iptables-save`/`iptables-restore` text.
pub trait Iptables {
    /// Feeds `input` to `iptables-restore` (or `ip6tables-restore`) in one transaction per table.
    fn restore(&self, family: IpFamily, input: &str, opts: RestoreOptions) -> Result<()>;
    /// The `iptables-save` output for one table, or for every loaded table when `None`.
    fn save(&self, family: IpFamily, table: Option<TableName>) -> Result<String>;
    /// The backend restores go to (partial plans are shaped for it); `Default` when unknown.
    fn backend(&self) -> Backend {
        Backend::Default
    }
    /// Whether `table` holds a chain named `chain` (kube-proxy's canary check). By default
    /// from the table's save output; the real binaries list just that chain.
    fn chain_exists(&self, family: IpFamily, table: TableName, chain: &str) -> Result<bool> {
        let declaration = format!(":{chain} ");
        Ok(self.save(family, Some(table))?.lines().any(|l| l.starts_with(&declaration)))
    }
}

/// The two programs of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `*-restore`
    Restore,
    /// `*-save`
    Save,
    /// The plain command (`iptables-nft`, …), for listing one chain.
    Command,
}

impl Backend {
    /// The program name, e.g. `ip6tables-legacy-save`.
    pub fn binary(self, family: IpFamily, tool: Tool) -> String {
        let base = match family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        let tool = match tool {
            Tool::Restore => "-restore",
            Tool::Save => "-save",
            Tool::Command => "",
        };
        match self {
            Backend::Default => format!("{base}{tool}"),
            other => format!("{base}-{}{tool}", other.as_str()),
        }
    }
}

impl FromStr for Backend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nft" => Ok(Backend::Nft),
            "legacy" => Ok(Backend::Legacy),
            "default" => Ok(Backend::Default),
            other => Err(Error::UnknownBackend(other.to_string())),
        }
    }
}

/// Runs the real binaries, directly or under `ip netns exec NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecIptables {
    /// Which binaries to run.
    pub backend: Backend,
    /// Run inside this network namespace (`ip netns exec`), e.g. for tests and `apply --netns`.
    pub netns: Option<String>,
    /// How long one process may run before it is killed ([`Error::Timeout`]), plus
    /// [`Self::TIMEOUT_PER_MB`] for every MB it is given on stdin.
    pub timeout: Duration,
}

impl ExecIptables {
    /// Default per-process time limit before the input-size allowance.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
    /// Extra time per MB of restore input. A full restore is ≈0.65 s/MB on nft with an idle
    /// CPU (a 10k-service ruleset is 33 MB, ≈21 s) and was measured above 8 s/MB on a 2-core
    /// node with a load average of 8; the limit guards against a hung process, so it must
    /// never cut a restore that is merely slow (one that is killed leaves the tables unchanged,
    /// and the retry would be killed again).
    pub const TIMEOUT_PER_MB: Duration = Duration::from_secs(30);

    /// The time limit for a process given `stdin_bytes` of input.
    pub fn timeout_for(&self, stdin_bytes: usize) -> Duration {
        let mb = u32::try_from(stdin_bytes.div_ceil(1_000_000)).unwrap_or(u32::MAX);
        self.timeout.saturating_add(Self::TIMEOUT_PER_MB.saturating_mul(mb))
    }

    /// Runs `backend`'s binaries in the current namespace.
    pub fn new(backend: Backend) -> Self {
        ExecIptables { backend, netns: None, timeout: Self::DEFAULT_TIMEOUT }
    }

    /// Runs the backend [`detect_backend_in`] finds, in `netns` when given.
    pub fn detected(netns: Option<String>) -> Self {
        let backend = detect_backend_in(netns.as_deref());
        ExecIptables { backend, netns, timeout: Self::DEFAULT_TIMEOUT }
    }

    /// The same, inside network namespace `name`.
    pub fn in_netns(mut self, name: impl Into<String>) -> Self {
        self.netns = Some(name.into());
        self
    }

    /// The argv for `binary args…`, prefixed with `ip netns exec NAME` when needed.
    fn argv(&self, binary: &str, args: &[&str]) -> Vec<String> {
        let mut argv = Vec::with_capacity(args.len() + 5);
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns.as_str()].map(String::from));
        }
        argv.push(binary.to_string());
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    /// Runs `binary` and maps launch problems (missing binary or namespace, lock, timeout) to
    /// errors; any other exit status is left to the caller.
    fn run(&self, binary: &str, args: &[&str], stdin: Option<&str>) -> Result<Finished> {
        let argv = self.argv(binary, args);
        debug!(argv = ?argv, stdin_bytes = stdin.map_or(0, str::len), "running");
        let timeout = self.timeout_for(stdin.map_or(0, str::len));
        let done = run::run(&argv, stdin.map(str::as_bytes), timeout)
            .map_err(|e| self.launch_error(&argv[0], binary, timeout, e))?;
        if done.status.success() {
            return Ok(done);
        }
        match self.exit_error(binary, &done.stderr) {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    fn launch_error(&self, program: &str, binary: &str, timeout: Duration, e: RunError) -> Error {
        let binary = binary.to_string();
        match e {
            RunError::Spawn(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Error::BinaryNotFound { binary: program.to_string() }
            }
            RunError::Spawn(source) | RunError::Wait(source) => Error::Io { binary, source },
            RunError::Timeout => Error::Timeout { binary, after: timeout },
        }
    }

    /// Failures that are not about the input: what `ip netns exec` reports itself (exit 255)
    /// and a held xtables lock.
    fn exit_error(&self, binary: &str, stderr: &str) -> Option<Error> {
        let (binary, stderr_text) = (binary.to_string(), stderr.trim().to_string());
        if let Some(ns) = &self.netns {
            if stderr.contains("Cannot open network namespace") {
                return Some(Error::NetnsNotFound { name: ns.clone(), stderr: stderr_text });
            }
            if stderr.contains(&format!("exec of \"{binary}\" failed: No such file")) {
                return Some(Error::BinaryNotFound { binary });
            }
        }
        error::is_lock_held(stderr).then_some(Error::LockHeld { binary, stderr: stderr_text })
    }
}

impl Iptables for ExecIptables {
    fn restore(&self, family: IpFamily, input: &str, opts: RestoreOptions) -> Result<()> {
        let binary = self.backend.binary(family, Tool::Restore);
        let (wait, poll) = (LOCK_WAIT_SECONDS.to_string(), LOCK_POLL_MICROS.to_string());
        let mut args = vec!["-w", wait.as_str(), "-W", poll.as_str()];
        if opts.noflush {
            args.push("--noflush");
        }
        if opts.counters {
            args.push("--counters");
        }
        trace!(%binary, input, "restore input");
        let done = self.run(&binary, &args, Some(input))?;
        if done.status.success() {
            return Ok(());
        }
        let failure = RestoreFailure::new(&binary, done.status.to_string(), &done.stderr, input);
        debug!(%binary, line = ?failure.line, "restore failed");
        Err(Error::Restore(Box::new(failure)))
    }

    fn save(&self, family: IpFamily, table: Option<TableName>) -> Result<String> {
        let binary = self.backend.binary(family, Tool::Save);
        let args: Vec<&str> = table.map(|t| vec!["-t", t.as_str()]).unwrap_or_default();
        let done = self.run(&binary, &args, None)?;
        if !done.status.success() {
            let stderr = done.stderr.trim().to_string();
            return Err(Error::Failed { binary, status: done.status.to_string(), stderr });
        }
        String::from_utf8(done.stdout).map_err(|_| Error::NotUtf8 { binary })
    }

    fn backend(&self) -> Backend {
        self.backend
    }

    /// `iptables -w 5 -t TABLE -n -L CHAIN`: exit 0 when the chain exists, 1 when it does not
    /// (legacy says "No chain/target/match by that name", iptables-nft 1.8.9 "chain … is
    /// incompatible"); other statuses are errors (3 and 4: no permission, no table support).
    /// Lists one chain instead of saving a whole table (a 10k-service nat table takes seconds
    /// to save).
    fn chain_exists(&self, family: IpFamily, table: TableName, chain: &str) -> Result<bool> {
        let binary = self.backend.binary(family, Tool::Command);
        let wait = LOCK_WAIT_SECONDS.to_string();
        let args = ["-w", wait.as_str(), "-t", table.as_str(), "-n", "-L", chain];
        let done = self.run(&binary, &args, None)?;
        if done.status.success() {
            return Ok(true);
        }
        if done.status.code() == Some(1) {
            return Ok(false);
        }
        let stderr = done.stderr.trim().to_string();
        Err(Error::Failed { binary, status: done.status.to_string(), stderr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_names() {
        assert_eq!(Backend::Nft.binary(IpFamily::V4, Tool::Restore), "iptables-nft-restore");
        assert_eq!(Backend::Legacy.binary(IpFamily::V6, Tool::Save), "ip6tables-legacy-save");
        assert_eq!(Backend::Default.binary(IpFamily::V4, Tool::Save), "iptables-save");
        assert_eq!(Backend::Nft.binary(IpFamily::V6, Tool::Command), "ip6tables-nft");
        assert_eq!(Backend::Default.binary(IpFamily::V4, Tool::Command), "iptables");
        assert_eq!("legacy".parse::<Backend>().unwrap(), Backend::Legacy);
        assert!("nftables".parse::<Backend>().is_err());
    }

    #[test]
    fn netns_prefix_is_argv_not_shell() {
        let ipt = ExecIptables::new(Backend::Nft).in_netns("my ns");
        assert_eq!(
            ipt.argv("iptables-nft-save", &["-t", "nat"]),
            ["ip", "netns", "exec", "my ns", "iptables-nft-save", "-t", "nat"]
        );
    }

    #[test]
    fn missing_binary_is_named() {
        let ipt = ExecIptables { backend: Backend::Nft, netns: None, timeout: Duration::from_secs(5) };
        match ipt.run("kubenat-missing-restore", &[], Some("")) {
            Err(e @ Error::BinaryNotFound { .. }) => {
                assert!(e.to_string().contains("kubenat-missing-restore"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn time_limit_grows_with_the_input() {
        let ipt = ExecIptables::new(Backend::Nft);
        assert_eq!(ipt.timeout_for(0), ExecIptables::DEFAULT_TIMEOUT);
        assert_eq!(ipt.timeout_for(1), ExecIptables::DEFAULT_TIMEOUT + ExecIptables::TIMEOUT_PER_MB);
        // A 20k-service ruleset (66 MB) gets more than half an hour, never the bare minute.
        assert!(ipt.timeout_for(66_000_000) >= Duration::from_secs(30 * 60));
        assert!(ipt.timeout_for(usize::MAX) > Duration::from_secs(365 * 24 * 3600), "saturates, never panics");
    }
}
