//! The typed ruleset: tables, chain declarations and rules made of flag/value arguments.
//! Renderer, writer, parser, diff and tracer all speak these types; text lives only at the edges.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::model::Protocol;

mod args;
pub mod comment;

pub use args::{ArgRef, Args, ArgsBuilder, Iter as ArgsIter, Values};

/// Longest chain name iptables accepts.
pub const MAX_CHAIN_NAME_LEN: usize = 28;

/// Errors building ruleset values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A chain name that iptables would reject.
    #[error("invalid chain name {name:?}: {reason}")]
    InvalidChainName {
        /// The offending name.
        name: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// An unknown table name.
    #[error("unknown table {0:?} (expected raw, mangle, nat, filter or security)")]
    UnknownTable(String),
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An iptables table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableName {
    /// `raw`
    Raw,
    /// `mangle`
    Mangle,
    /// `nat`
    Nat,
    /// `filter`
    Filter,
    /// `security`
    Security,
}

impl TableName {
    /// The table's name as iptables prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            TableName::Raw => "raw",
            TableName::Mangle => "mangle",
            TableName::Nat => "nat",
            TableName::Filter => "filter",
            TableName::Security => "security",
        }
    }

    /// Parses a table name.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "raw" => TableName::Raw,
            "mangle" => TableName::Mangle,
            "nat" => TableName::Nat,
            "filter" => TableName::Filter,
            "security" => TableName::Security,
            other => return Err(Error::UnknownTable(other.to_string())),
        })
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated chain name: 1–28 characters, no whitespace, quotes or leading `-`/`!`.
/// Shared (`Arc<str>`): every rule names its chain, and cloning must not allocate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainName(Arc<str>);

impl ChainName {
    /// Validates `name` as an iptables chain name.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("empty")
        } else if name.len() > MAX_CHAIN_NAME_LEN {
            Some("longer than 28 characters")
        } else if name.starts_with('-') || name.starts_with('!') {
            Some("starts with '-' or '!'")
        } else if !name.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\'' && c != '\\') {
            Some("contains whitespace, quotes or non-ASCII characters")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidChainName { name, reason }),
            None => Ok(ChainName(name.into())),
        }
    }

    /// A name known to be valid at compile time (fixed kube-proxy chain names).
    pub(crate) fn fixed(name: &'static str) -> Self {
        debug_assert!(ChainName::new(name).is_ok(), "{name}");
        ChainName(name.into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is one of the built-in chains of any table.
    pub fn is_builtin(&self) -> bool {
        matches!(&*self.0, "PREROUTING" | "INPUT" | "FORWARD" | "OUTPUT" | "POSTROUTING")
    }
}

impl fmt::Display for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ChainName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// One `[!] flag [value…]` group of a rule, e.g. `-m comment`, `! -s 10.0.0.0/8`, `--dport 80`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arg {
    /// Whether the group is preceded by `!`.
    pub negated: bool,
    /// The flag, with its dashes (`-m`, `--dport`, `-j`); borrowed for the renderer's fixed
    /// flags so that rendering does not allocate one string per flag.
    pub flag: Cow<'static, str>,
    /// The flag's values (unquoted).
    pub values: Vec<String>,
}

impl Arg {
    /// A flag with one value.
    pub fn new(flag: impl Into<Cow<'static, str>>, value: impl Into<String>) -> Self {
        Arg { negated: false, flag: flag.into(), values: vec![value.into()] }
    }

    /// A flag with no value (`--rcheck`, `--set`).
    pub fn bare(flag: impl Into<Cow<'static, str>>) -> Self {
        Arg { negated: false, flag: flag.into(), values: Vec::new() }
    }

    /// The same group, negated.
    pub fn negate(mut self) -> Self {
        self.negated = true;
        self
    }

    /// The first value, if any.
    pub fn value(&self) -> Option<&str> {
        self.values.first().map(String::as_str)
    }
}

/// How a rule line changes its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleOp {
    /// `-A chain`
    Append,
    /// `-I chain [pos]`
    Insert(Option<u32>),
    /// `-D chain rule`
    Delete,
}

/// One rule line: an operation on a chain and its argument groups, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Append, insert or delete.
    pub op: RuleOp,
    /// The chain the rule lives in.
    pub chain: ChainName,
    /// Matches and target, in the order they are written (compact: one buffer per rule).
    pub args: Args,
}

impl Rule {
    /// Starts an `-A chain` rule.
    pub fn append(chain: &ChainName) -> RuleBuilder {
        RuleBuilder { op: RuleOp::Append, chain: chain.clone(), args: ArgsBuilder::with_capacity(TYPICAL_RULE_BYTES) }
    }

    /// A rule from owned groups.
    pub fn new(op: RuleOp, chain: ChainName, args: Vec<Arg>) -> Rule {
        Rule { op, chain, args: args.into() }
    }

    /// The first group with `flag`.
    pub fn get(&self, flag: &str) -> Option<ArgRef<'_>> {
        self.args.iter().find(|a| a.flag == flag)
    }

    /// Whether some group has `flag` with `value` as its first value (e.g. `-m`, `recent`).
    pub fn has(&self, flag: &str, value: &str) -> bool {
        self.args.iter().any(|a| a.flag == flag && a.value() == Some(value))
    }

    /// The jump (`-j`) or goto (`-g`) target, if any.
    pub fn target(&self) -> Option<&str> {
        self.args
            .iter()
            .find(|a| a.flag == "-j" || a.flag == "--jump" || a.flag == "-g" || a.flag == "--goto")
            .and_then(|a| a.value())
    }

    /// The `--comment` text, if any.
    pub fn comment(&self) -> Option<&str> {
        self.get("--comment").and_then(|a| a.value())
    }
}

/// Builds a rule with typed helpers so that argument order matches kube-proxy's.
#[derive(Debug, Clone)]
pub struct RuleBuilder {
    op: RuleOp,
    chain: ChainName,
    args: ArgsBuilder,
}

/// Room reserved for a rule's encoded groups while it is built: a kube-proxy rule is 40–150
/// bytes, so most fit without growing the buffer group by group.
const TYPICAL_RULE_BYTES: usize = 128;

impl RuleBuilder {
    /// Adds an arbitrary group.
    pub fn arg(mut self, arg: Arg) -> Self {
        self.args.push(&arg);
        self
    }

    /// Adds `flag value` without building an [`Arg`] (the renderer's hot path).
    pub fn flag(mut self, flag: &str, value: &str) -> Self {
        self.args.push_parts(false, flag, std::iter::once(value));
        self
    }

    /// Adds several groups.
    pub fn args(mut self, args: impl IntoIterator<Item = Arg>) -> Self {
        for arg in args {
            self.args.push(&arg);
        }
        self
    }

    /// `-m module`
    pub fn module(self, module: &str) -> Self {
        self.flag("-m", module)
    }

    /// `-m comment --comment text`; the text is made safe by [`comment::comment_text`].
    pub fn comment(self, text: impl Into<String>) -> Self {
        let text = text.into();
        let text = if text.len() <= comment::MAX_COMMENT_BYTES && !text.chars().any(char::is_control) {
            text
        } else {
            comment::comment_text(&text)
        };
        self.module("comment").flag("--comment", &text)
    }

    /// `-m proto -p proto`
    pub fn proto(self, p: Protocol) -> Self {
        self.module(p.as_str()).flag("-p", p.as_str())
    }

    /// `-d ip`
    pub fn dst(self, ip: IpAddr) -> Self {
        self.flag("-d", &ip.to_string())
    }

    /// `-s cidr`
    pub fn src_net(self, net: IpNet) -> Self {
        self.flag("-s", &net.to_string())
    }

    /// `-s ip`
    pub fn src(self, ip: IpAddr) -> Self {
        self.flag("-s", &ip.to_string())
    }

    /// `--dport port`
    pub fn dport(self, port: u16) -> Self {
        self.flag("--dport", &port.to_string())
    }

    /// `-m addrtype --src-type LOCAL`
    pub fn src_type_local(self) -> Self {
        self.module("addrtype").flag("--src-type", "LOCAL")
    }

    /// `-m addrtype --dst-type LOCAL`
    pub fn dst_type_local(self) -> Self {
        self.module("addrtype").flag("--dst-type", "LOCAL")
    }

    /// `-j target` and finishes the rule.
    pub fn jump(self, target: &str) -> Rule {
        self.flag("-j", target).build()
    }

    /// `-j target` followed by target options, and finishes the rule.
    pub fn jump_with(self, target: &str, options: impl IntoIterator<Item = Arg>) -> Rule {
        self.flag("-j", target).args(options).build()
    }

    /// Finishes a rule without a target.
    pub fn build(self) -> Rule {
        Rule { op: self.op, chain: self.chain, args: self.args.finish() }
    }
}

/// A chain declaration line: `:NAME POLICY [packets:bytes]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainDecl {
    /// The chain.
    pub name: ChainName,
    /// `ACCEPT`/`DROP` for built-in chains, `None` (written `-`) for user chains.
    pub policy: Option<String>,
}

impl ChainDecl {
    /// A user-defined chain (`:NAME - [0:0]`).
    pub fn user(name: ChainName) -> Self {
        ChainDecl { name, policy: None }
    }
}

/// One table section of a restore file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Which table.
    pub name: TableName,
    /// Declared chains, in order (with `--noflush` a declaration flushes the chain).
    pub chains: Vec<ChainDecl>,
    /// Rules, in order.
    pub rules: Vec<Rule>,
    /// Chains flushed and deleted (`:NAME - [0:0]` plus `-X NAME`) at the end.
    pub deletes: Vec<ChainName>,
}

impl Table {
    /// An empty table section.
    pub fn new(name: TableName) -> Self {
        Table { name, chains: Vec::new(), rules: Vec::new(), deletes: Vec::new() }
    }

    /// Declares a user chain unless it is declared already.
    pub fn declare(&mut self, name: &ChainName) {
        if !self.chains.iter().any(|c| &c.name == name) {
            self.chains.push(ChainDecl::user(name.clone()));
        }
    }

    /// Declares a user chain the caller knows is not declared yet (O(1); the renderer, which
    /// declares each chain exactly once, uses this on its hot path).
    pub fn push_chain(&mut self, name: &ChainName) {
        self.chains.push(ChainDecl::user(name.clone()));
    }

    /// Whether `name` is declared in this table.
    pub fn is_declared(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c.name.as_str() == name)
    }

    /// The rules of one chain, in order.
    pub fn chain_rules<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| r.chain.as_str() == name)
    }
}

/// A whole restore input or save dump: table sections in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    /// Table sections, in the order they are written.
    pub tables: Vec<Table>,
}

impl Ruleset {
    /// The section for `name`, if present.
    pub fn table(&self, name: TableName) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The section for `name`, created (at the end) if missing.
    pub fn table_mut(&mut self, name: TableName) -> &mut Table {
        if let Some(i) = self.tables.iter().position(|t| t.name == name) {
            &mut self.tables[i]
        } else {
            self.tables.push(Table::new(name));
            self.tables.last_mut().expect("just pushed")
        }
    }

    /// Total number of rules across tables.
    pub fn rule_count(&self) -> usize {
        self.tables.iter().map(|t| t.rules.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_are_validated() {
        assert!(ChainName::new("KUBE-SVC-NPX46M4PTMTKRN6Y").is_ok());
        assert!(ChainName::new("").is_err());
        assert!(ChainName::new("A".repeat(29)).is_err());
        assert!(ChainName::new("bad name").is_err());
        assert!(ChainName::new("-j").is_err());
        assert!(ChainName::new("quo\"te").is_err());
        assert!(ChainName::new("A".repeat(28)).is_ok());
    }

    #[test]
    fn builder_keeps_kube_proxy_argument_order() {
        let chain = ChainName::new("KUBE-SERVICES").unwrap();
        let rule = Rule::append(&chain)
            .comment("ns/svc:p cluster IP")
            .proto(Protocol::Tcp)
            .dst("10.0.0.1".parse().unwrap())
            .dport(80)
            .jump("KUBE-SVC-X");
        let flags: Vec<&str> = rule.args.iter().map(|a| a.flag).collect();
        assert_eq!(flags, ["-m", "--comment", "-m", "-p", "-d", "--dport", "-j"]);
        assert_eq!(rule.target(), Some("KUBE-SVC-X"));
        assert_eq!(rule.comment(), Some("ns/svc:p cluster IP"));
    }
}
