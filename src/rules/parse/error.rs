//! The parser's error type: every variant carries the 1-based line number and the line.

use crate::rules::ruleset::{Error as RulesetError, TableName};

/// Errors reading restore/save text. None is retryable: the input itself is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A line other than a comment or `*table` appears outside a `*table` … `COMMIT` section.
    #[error("line {line}: line outside a table section (missing *table?): {text}")]
    OutsideTable {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
    },
    /// A `*name` line names no known table.
    #[error("line {line}: unknown table: {text}")]
    UnknownTable {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
        /// Why the name was rejected.
        #[source]
        source: RulesetError,
    },
    /// A table section starts before the previous one was committed.
    #[error("line {line}: table starts before COMMIT of table {open}: {text}")]
    NestedTable {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
        /// The table still open.
        open: TableName,
    },
    /// The input ends inside a table section.
    #[error("line {line}: table {table} has no COMMIT before the end of the input: {text}")]
    MissingCommit {
        /// 1-based line number of the `*table` line.
        line: usize,
        /// The `*table` line.
        text: String,
        /// The table left open.
        table: TableName,
    },
    /// A double quote is never closed.
    #[error("line {line}: unterminated quote: {text}")]
    UnterminatedQuote {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
    },
    /// A `:CHAIN POLICY [packets:bytes]` line is malformed.
    #[error("line {line}: bad chain declaration ({reason}): {text}")]
    BadDeclaration {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A command line names no chain.
    #[error("line {line}: rule has no chain: {text}")]
    MissingChain {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
    },
    /// A chain name iptables would reject.
    #[error("line {line}: invalid chain name: {text}")]
    InvalidChainName {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
        /// Why the name was rejected.
        #[source]
        source: RulesetError,
    },
    /// A rule or command for a chain neither built into the table nor declared (or deleted).
    #[error("line {line}: rule for undeclared chain {chain:?}: {text}")]
    UndeclaredChain {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
        /// The chain.
        chain: String,
    },
    /// A chain declared twice in one section, or declared again after `-X`.
    #[error("line {line}: chain {chain:?} declared twice: {text}")]
    DuplicateChain {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
        /// The chain.
        chain: String,
    },
    /// `-X` of a built-in chain, of a chain that still has or is the target of rules, or twice.
    #[error("line {line}: cannot delete chain {chain:?} ({reason}): {text}")]
    BadDelete {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
        /// The chain.
        chain: String,
        /// Why it cannot be deleted.
        reason: &'static str,
    },
    /// A command's arguments are malformed.
    #[error("line {line}: bad rule ({reason}): {text}")]
    BadRule {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A line that is not a command this parser knows (`-R`, `-E`, stray words).
    #[error("line {line}: unknown command {command:?}: {text}")]
    UnknownCommand {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
        /// The unknown command word.
        command: String,
    },
}

impl Error {
    /// The 1-based line number the error refers to.
    pub fn line(&self) -> usize {
        match self {
            Error::OutsideTable { line, .. }
            | Error::UnknownTable { line, .. }
            | Error::NestedTable { line, .. }
            | Error::MissingCommit { line, .. }
            | Error::UnterminatedQuote { line, .. }
            | Error::BadDeclaration { line, .. }
            | Error::MissingChain { line, .. }
            | Error::InvalidChainName { line, .. }
            | Error::UndeclaredChain { line, .. }
            | Error::DuplicateChain { line, .. }
            | Error::BadDelete { line, .. }
            | Error::BadRule { line, .. }
            | Error::UnknownCommand { line, .. } => *line,
        }
    }
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
