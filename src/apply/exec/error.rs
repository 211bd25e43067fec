//! Errors of running the iptables binaries, and how `iptables-restore`'s complaints are read:
//! the failing line number it reports is mapped back onto the input we sent.

use std::fmt;
use std::io;
use std::time::Duration;

/// Errors running `iptables-restore` / `iptables-save`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binary is not installed (or not on `PATH`, in the namespace if one was given).
    /// Not retryable.
    #[error("{binary} not found: is iptables installed (package `iptables`)?")]
    BinaryNotFound {
        /// The program we tried to run.
        binary: String,
    },
    /// The network namespace given to `ip netns exec` does not exist. Not retryable.
    #[error("network namespace {name:?} not found: {stderr}")]
    NetnsNotFound {
        /// The namespace name.
        name: String,
        /// What `ip` said.
        stderr: String,
    },
    /// The process could not be started or waited for. Retryable.
    #[error("running {binary}")]
    Io {
        /// The program we tried to run.
        binary: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The process did not finish in time and was killed. Retryable.
    #[error("{binary} did not finish within {after:?} and was killed")]
    Timeout {
        /// The program.
        binary: String,
        /// How long we waited.
        after: Duration,
    },
    /// Another process held the xtables lock for longer than we wait (`-w`). Retryable.
    #[error("{binary}: the xtables lock is held by another process: {stderr}")]
    LockHeld {
        /// The program.
        binary: String,
        /// What it said.
        stderr: String,
    },
    /// `iptables-restore` rejected our input; carries the failing line and the lines around
    /// it. Not retryable with the same input.
    #[error(transparent)]
    Restore(Box<RestoreFailure>),
    /// Any other non-zero exit (e.g. of `iptables-save`). Not retryable.
    #[error("{binary} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        binary: String,
        /// Its exit status, as text.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// A backend name other than `nft`, `legacy` or `default`. Not retryable.
    #[error("unknown iptables backend {0:?} (expected nft, legacy or default)")]
    UnknownBackend(String),
    /// `iptables-save` printed something that is not UTF-8. Not retryable.
    #[error("{binary} printed output that is not UTF-8")]
    NotUtf8 {
        /// The program.
        binary: String,
    },
}

impl Error {
    /// Whether trying the same call again later may succeed (lock contention, a slow kernel).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Io { .. } | Error::Timeout { .. } | Error::LockHeld { .. })
    }

    /// The failing line reported by `iptables-restore`, if this is a restore failure.
    pub fn failing_line(&self) -> Option<usize> {
        match self {
            Error::Restore(failure) => failure.line,
            _ => None,
        }
    }
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One numbered line of the input we sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputLine {
    /// 1-based line number, as `iptables-restore` counts.
    pub number: usize,
    /// The line's text.
    pub text: String,
}

/// An `iptables-restore` run that rejected its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreFailure {
    /// The program (`iptables-nft-restore` …).
    pub binary: String,
    /// Its exit status, as text.
    pub status: String,
    /// The failing line number iptables-restore reported, if it reported one.
    pub line: Option<usize>,
    /// The meaningful part of its complaint (version banners and usage hints removed).
    pub message: String,
    /// Our input lines around `line` (the line before, the line, the line after).
    pub context: Vec<InputLine>,
    /// The rule that probably caused it when the reported line is not the culprit: nft reports
    /// a jump to a missing chain at the `COMMIT` line; this is the first line jumping there.
    pub culprit: Option<InputLine>,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl RestoreFailure {
    /// Reads `stderr` of a failed restore of `input`.
    pub fn new(binary: &str, status: String, stderr: &str, input: &str) -> Self {
        let line = reported_line(stderr);
        let context = line.map(|l| lines_around(input, l)).unwrap_or_default();
        let culprit = missing_chain(stderr).and_then(|chain| first_jump_to(input, &chain));
        RestoreFailure {
            binary: binary.to_string(),
            status,
            line,
            message: message(stderr),
            context,
            culprit: culprit.filter(|c| Some(c.number) != line),
            stderr: stderr.to_string(),
        }
    }
}

impl fmt::Display for RestoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed ({})", self.binary, self.status)?;
        if let Some(line) = self.line {
            write!(f, " at line {line}")?;
        }
        write!(f, ": {}", self.message)?;
        for l in &self.context {
            let mark = if Some(l.number) == self.line { '>' } else { ' ' };
            write!(f, "\n {mark} {:>5} | {}", l.number, l.text)?;
        }
        if let Some(c) = &self.culprit {
            write!(f, "\n   probably caused by line {}: {}", c.number, c.text)?;
        }
        Ok(())
    }
}

impl std::error::Error for RestoreFailure {}

/// The line number in `Error occurred at line: N`, `line N failed` or `COMMIT expected at line N`.
pub(crate) fn reported_line(stderr: &str) -> Option<usize> {
    // Legacy: "line N failed"; nft batch errors: "line N: CHAIN_DEL failed (…): chain X";
    // parse errors: "Error occurred at line: N"; a missing COMMIT: "COMMIT expected at line N".
    const MARKERS: [(&str, &str); 4] =
        [("Error occurred at line: ", ""), ("line ", " failed"), ("line ", ": "), ("COMMIT expected at line ", "")];
    stderr.lines().find_map(|text| {
        MARKERS.iter().find_map(|(before, after)| {
            let start = text.find(before)? + before.len();
            let rest = &text[start..];
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 || !rest[digits..].starts_with(after) {
                return None;
            }
            rest[..digits].parse().ok()
        })
    })
}

/// The lines `line - 1 ..= line + 1` of `input` that exist.
pub(crate) fn lines_around(input: &str, line: usize) -> Vec<InputLine> {
    let first = line.saturating_sub(1).max(1);
    input
        .lines()
        .enumerate()
        .map(|(i, text)| InputLine { number: i + 1, text: text.to_string() })
        .skip(first - 1)
        .take(line + 2 - first)
        .collect()
}

/// stderr without version banners, usage hints and deprecation notices, on one line.
fn message(stderr: &str) -> String {
    let parts: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Try `") && !l.starts_with("Ignoring deprecated"))
        .filter(|l| !l.starts_with("Error occurred at line"))
        .map(|l| match (l.find(" v1."), l.find("): ")) {
            // `iptables-restore v1.8.9 (nf_tables): msg` -> `msg`
            (Some(v), Some(end)) if v < end => &l[end + 3..],
            _ => l,
        })
        .collect();
    if parts.is_empty() {
        "no error message".to_string()
    } else {
        parts.join("; ")
    }
}

/// The chain in nft's `Chain 'X' does not exist` or legacy's ``Couldn't load target `X'``.
fn missing_chain(stderr: &str) -> Option<String> {
    let between = |text: &str, open: &str, close: char| -> Option<String> {
        let start = text.find(open)? + open.len();
        let len = text[start..].find(close)?;
        Some(text[start..start + len].to_string())
    };
    stderr.lines().find_map(|l| {
        between(l, "Chain '", '\'')
            .filter(|_| l.contains("does not exist"))
            .or_else(|| between(l, "Couldn't load target `", '\''))
    })
}

/// The first rule line of `input` that jumps (`-j`/`-g`) to `chain`.
fn first_jump_to(input: &str, chain: &str) -> Option<InputLine> {
    input.lines().enumerate().find_map(|(i, text)| {
        let words: Vec<&str> = text.split_whitespace().collect();
        let jumps = words.windows(2).any(|w| matches!(w[0], "-j" | "--jump" | "-g" | "--goto") && w[1] == chain);
        jumps.then(|| InputLine { number: i + 1, text: text.to_string() })
    })
}

/// Whether stderr says the xtables lock could not be taken.
pub(crate) fn is_lock_held(stderr: &str) -> bool {
    stderr.contains("xtables lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    const INPUT: &str = "*filter\n:KUBE-A - [0:0]\n-A KUBE-A -j ACCEPT\n-A KUBE-A -j KUBE-NOPE\nCOMMIT\n";

    #[test]
    fn reads_every_line_report_format() {
        assert_eq!(reported_line("iptables-restore v1.8.9 (legacy): x\n\nError occurred at line: 4\n"), Some(4));
        assert_eq!(
            reported_line("iptables-nft-restore: line 12 failed: No chain/target/match by that name.\n"),
            Some(12)
        );
        assert_eq!(reported_line("iptables-restore: line 3 failed\n"), Some(3));
        assert_eq!(reported_line("iptables-restore: COMMIT expected at line 7\n"), Some(7));
        assert_eq!(
            reported_line(
                "iptables-nft-restore: line 3: CHAIN_DEL failed (Device or resource busy): chain KUBE-SEP-X\n"
            ),
            Some(3)
        );
        assert_eq!(reported_line("unknown option \"--bogus\"\n"), None);
        assert_eq!(reported_line("the line is fine\n"), None);
    }

    #[test]
    fn context_is_clamped_to_the_input() {
        let numbers = |l| lines_around(INPUT, l).iter().map(|l| l.number).collect::<Vec<_>>();
        assert_eq!(numbers(3), [2, 3, 4]);
        assert_eq!(numbers(1), [1, 2]);
        assert_eq!(numbers(5), [4, 5]);
        assert_eq!(numbers(6), [5]);
    }

    #[test]
    fn nft_missing_chain_points_at_the_jump() {
        let stderr = "iptables-nft-restore v1.8.9 (nf_tables): Chain 'KUBE-NOPE' does not exist\n\
                      Error occurred at line: 5\nTry `iptables-nft-restore -h' for more information.\n";
        let failure = RestoreFailure::new("iptables-nft-restore", "exit status: 2".into(), stderr, INPUT);
        assert_eq!(failure.line, Some(5));
        assert_eq!(failure.message, "Chain 'KUBE-NOPE' does not exist");
        assert_eq!(failure.culprit.as_ref().map(|c| c.number), Some(4));
        let shown = failure.to_string();
        assert!(shown.contains("at line 5"), "{shown}");
        assert!(shown.contains(">     5 | COMMIT"), "{shown}");
        assert!(shown.contains("      4 | -A KUBE-A -j KUBE-NOPE"), "{shown}");
        assert!(shown.contains("probably caused by line 4"), "{shown}");
        assert!(!shown.contains("Try `"), "{shown}");
    }

    #[test]
    fn legacy_missing_target_reports_the_right_line_without_a_culprit() {
        let stderr = "Ignoring deprecated --wait-interval option.\n\
                      iptables-restore v1.8.9 (legacy): Couldn't load target `KUBE-NOPE':No such file or directory\n\n\
                      Error occurred at line: 4\n";
        let failure = RestoreFailure::new("iptables-legacy-restore", "exit status: 2".into(), stderr, INPUT);
        assert_eq!(failure.line, Some(4));
        assert_eq!(failure.culprit, None);
        assert_eq!(failure.message, "Couldn't load target `KUBE-NOPE':No such file or directory");
    }

    #[test]
    fn retryable_errors() {
        let lock = Error::LockHeld { binary: "x".into(), stderr: String::new() };
        assert!(lock.is_retryable());
        assert!(is_lock_held("Another app is currently holding the xtables lock. Stopped waiting after 5s."));
        assert!(!Error::BinaryNotFound { binary: "x".into() }.is_retryable());
        let restore = Error::Restore(Box::new(RestoreFailure::new("r", "1".into(), "line 1 failed", "x\n")));
        assert!(!restore.is_retryable());
        assert_eq!(restore.failing_line(), Some(1));
    }
}
