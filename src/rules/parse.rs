//! Parses `iptables-save` output and `iptables-restore` input into a `Ruleset`, strictly and
//! with line numbers; it keeps arguments as written (canonical forms live in `diff`).
//!
//! `-F` is applied while parsing (it drops the rules parsed so far for the chain), `-X` moves
//! a chain from `Table::chains` to `Table::deletes`, `-P` sets a built-in chain's policy and
//! `-Z` is ignored. A repeated `*table` section becomes a second `Table` of the same name.

mod error;
mod tokens;

use std::collections::{BTreeMap, BTreeSet, HashSet};

pub use self::error::{Error, Result};
use self::tokens::{group, tokenize, GroupError, Token};
use super::ruleset::{ChainDecl, ChainName, Rule, RuleOp, Ruleset, Table, TableName};

/// The built-in chains of `table`.
pub fn builtin_chains(table: TableName) -> &'static [&'static str] {
    match table {
        TableName::Raw => &["PREROUTING", "OUTPUT"],
        TableName::Mangle => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        TableName::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        TableName::Filter | TableName::Security => &["INPUT", "FORWARD", "OUTPUT"],
    }
}

/// Whether `chain` is built into `table`.
pub fn is_builtin_chain(table: TableName, chain: &str) -> bool {
    builtin_chains(table).contains(&chain)
}

/// Parses `iptables-save` output (with or without `-c` counters) or `iptables-restore` input.
pub fn parse(text: &str) -> Result<Ruleset> {
    let mut parser = Parser::default();
    for (index, raw) in text.lines().enumerate() {
        let line = Line { number: index + 1, text: raw.trim() };
        if line.text.is_empty() || line.text.starts_with('#') {
            continue;
        }
        parser.line(&line)?;
    }
    parser.finish()
}

/// One non-blank line with its 1-based number.
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    number: usize,
    text: &'a str,
}

impl Line<'_> {
    fn err_text(&self) -> String {
        self.text.to_string()
    }

    fn bad_rule(&self, reason: impl Into<String>) -> Error {
        Error::BadRule { line: self.number, text: self.err_text(), reason: reason.into() }
    }

    fn bad_declaration(&self, reason: &'static str) -> Error {
        Error::BadDeclaration { line: self.number, text: self.err_text(), reason }
    }

    fn tokens(&self, text: &str) -> Result<Vec<Token>> {
        tokenize(text).map_err(|_| Error::UnterminatedQuote { line: self.number, text: self.err_text() })
    }

    fn chain_name(&self, name: &str) -> Result<ChainName> {
        ChainName::new(name).map_err(|source| Error::InvalidChainName {
            line: self.number,
            text: self.err_text(),
            source,
        })
    }
}

/// An open `*table` section.
#[derive(Debug)]
struct Section {
    table: Table,
    /// Chains declared or deleted in this section (a second declaration is an error); kept
    /// as a set so that parsing a 100k-chain dump stays linear.
    seen: HashSet<ChainName>,
    header_line: usize,
    header: String,
}

#[derive(Debug, Default)]
struct Parser {
    ruleset: Ruleset,
    section: Option<Section>,
    /// User chains declared and not deleted so far, per table (across sections).
    declared: BTreeMap<TableName, BTreeSet<ChainName>>,
}

impl Parser {
    fn line(&mut self, line: &Line<'_>) -> Result<()> {
        if let Some(name) = line.text.strip_prefix('*') {
            return self.open(line, name);
        }
        let Some(section) = self.section.take() else {
            return Err(Error::OutsideTable { line: line.number, text: line.err_text() });
        };
        if line.text == "COMMIT" {
            self.ruleset.tables.push(section.table);
            return Ok(());
        }
        let mut open = Open { declared: self.declared.entry(section.table.name).or_default(), section };
        let result = if let Some(decl) = line.text.strip_prefix(':') {
            open.declaration(line, decl)
        } else {
            open.command(line)
        };
        self.section = Some(open.section);
        result
    }

    fn open(&mut self, line: &Line<'_>, name: &str) -> Result<()> {
        if let Some(open) = &self.section {
            return Err(Error::NestedTable { line: line.number, text: line.err_text(), open: open.table.name });
        }
        let name = TableName::parse(name.trim()).map_err(|source| Error::UnknownTable {
            line: line.number,
            text: line.err_text(),
            source,
        })?;
        self.section = Some(Section {
            table: Table::new(name),
            seen: HashSet::new(),
            header_line: line.number,
            header: line.err_text(),
        });
        Ok(())
    }

    fn finish(self) -> Result<Ruleset> {
        match self.section {
            Some(open) => {
                Err(Error::MissingCommit { line: open.header_line, text: open.header, table: open.table.name })
            }
            None => Ok(self.ruleset),
        }
    }
}

/// The open section plus the declared chains of its table.
struct Open<'p> {
    section: Section,
    declared: &'p mut BTreeSet<ChainName>,
}

impl Open<'_> {
    fn table(&self) -> TableName {
        self.section.table.name
    }

    fn exists(&self, chain: &ChainName) -> bool {
        is_builtin_chain(self.table(), chain.as_str()) || self.declared.contains(chain)
    }

    fn require(&self, line: &Line<'_>, chain: &ChainName) -> Result<()> {
        if self.exists(chain) {
            Ok(())
        } else {
            Err(Error::UndeclaredChain { line: line.number, text: line.err_text(), chain: chain.to_string() })
        }
    }

    /// `:NAME POLICY [packets:bytes]`
    fn declaration(&mut self, line: &Line<'_>, decl: &str) -> Result<()> {
        let tokens = line.tokens(decl)?;
        let (name, policy, counters) = match tokens.as_slice() {
            [name, policy] => (name, policy, None),
            [name, policy, counters] => (name, policy, Some(counters)),
            [] | [_] => return Err(line.bad_declaration("missing policy")),
            _ => return Err(line.bad_declaration("extra words")),
        };
        if counters.is_some_and(|c| !is_counters(c)) {
            return Err(line.bad_declaration("counters must look like [packets:bytes]"));
        }
        let name = line.chain_name(&name.text)?;
        let builtin = is_builtin_chain(self.table(), name.as_str());
        let policy = match policy.text.as_str() {
            "-" => None,
            "ACCEPT" | "DROP" if builtin => Some(policy.text.clone()),
            "ACCEPT" | "DROP" => return Err(line.bad_declaration("policy on a user chain")),
            _ => return Err(line.bad_declaration("policy must be ACCEPT, DROP or -")),
        };
        self.declare(line, ChainDecl { name, policy })
    }

    fn declare(&mut self, line: &Line<'_>, decl: ChainDecl) -> Result<()> {
        if !self.section.seen.insert(decl.name.clone()) {
            return Err(Error::DuplicateChain {
                line: line.number,
                text: line.err_text(),
                chain: decl.name.to_string(),
            });
        }
        if !is_builtin_chain(self.table(), decl.name.as_str()) {
            self.declared.insert(decl.name.clone());
        }
        self.section.table.chains.push(decl);
        Ok(())
    }

    /// `[packets:bytes] -A|-I|-D|-N|-X|-F|-P|-Z …`
    fn command(&mut self, line: &Line<'_>) -> Result<()> {
        let tokens = line.tokens(line.text)?;
        let tokens = match tokens.split_first() {
            Some((first, rest)) if is_counters(first) => rest,
            _ => &tokens[..],
        };
        let Some((command, rest)) = tokens.split_first() else {
            return Err(line.bad_rule("counters without a command"));
        };
        let command_word = if command.quoted { "" } else { command.text.as_str() };
        match command_word {
            "-A" | "--append" => self.rule(line, RuleOp::Append, rest),
            "-I" | "--insert" => self.rule(line, RuleOp::Insert(None), rest),
            "-D" | "--delete" => self.rule(line, RuleOp::Delete, rest),
            "-N" | "--new-chain" => self.new_chain(line, rest),
            "-X" | "--delete-chain" => self.delete_chain(line, rest),
            "-F" | "--flush" => self.flush(line, rest),
            "-P" | "--policy" => self.policy(line, rest),
            "-Z" | "--zero" => Ok(()),
            _ => Err(Error::UnknownCommand { line: line.number, text: line.err_text(), command: command.text.clone() }),
        }
    }

    /// `-A`, `-I` (with an optional position) and `-D` rule lines.
    fn rule(&mut self, line: &Line<'_>, op: RuleOp, rest: &[Token]) -> Result<()> {
        let (chain, rest) = chain_arg(line, rest)?;
        self.require(line, &chain)?;
        let (op, rest) = match (op, rest) {
            (RuleOp::Insert(_), [position, tail @ ..]) if is_number(position) => {
                let position = position.text.parse::<u32>().ok().filter(|p| *p > 0);
                let position = position.ok_or_else(|| line.bad_rule("insert position must be 1 or more"))?;
                (RuleOp::Insert(Some(position)), tail)
            }
            (RuleOp::Delete, [only]) if is_number(only) => {
                return Err(line.bad_rule("delete by rule number is not supported"));
            }
            _ => (op, rest),
        };
        let args = group(rest).map_err(|e| {
            line.bad_rule(match e {
                GroupError::ValueWithoutFlag(v) => format!("value {v:?} before any flag"),
                GroupError::DanglingNegation => "'!' at the end of the rule".to_string(),
                GroupError::MisplacedNegation => "'!' not before a flag or value".to_string(),
            })
        })?;
        let rule = Rule::new(op, chain, args);
        // iptables-restore rejects a jump to a chain deleted earlier in the transaction (and the
        // writer puts deletions last, where such a jump would make them fail).
        if rule.op != RuleOp::Delete
            && rule.target().is_some_and(|target| self.section.table.deletes.iter().any(|d| d.as_str() == target))
        {
            return Err(line.bad_rule("jumps to a chain deleted earlier in this table"));
        }
        self.section.table.rules.push(rule);
        Ok(())
    }

    fn new_chain(&mut self, line: &Line<'_>, rest: &[Token]) -> Result<()> {
        let (chain, rest) = chain_arg(line, rest)?;
        no_more(line, rest)?;
        if is_builtin_chain(self.table(), chain.as_str()) {
            return Err(line.bad_rule("-N of a built-in chain"));
        }
        self.declare(line, ChainDecl::user(chain))
    }

    fn delete_chain(&mut self, line: &Line<'_>, rest: &[Token]) -> Result<()> {
        let (chain, rest) = chain_arg(line, rest)?;
        no_more(line, rest)?;
        let table = &self.section.table;
        let reason = if is_builtin_chain(table.name, chain.as_str()) {
            Some("built-in chain")
        } else if table.deletes.contains(&chain) {
            Some("deleted twice")
        } else if table.rules.iter().any(|r| r.op != RuleOp::Delete && r.chain == chain) {
            Some("it still has rules")
        } else if table.rules.iter().any(|r| r.op != RuleOp::Delete && r.target() == Some(chain.as_str())) {
            // A `-D` of the jump earlier in the section removes the reference, as in iptables.
            Some("a rule still jumps to it")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::BadDelete {
                line: line.number,
                text: line.err_text(),
                chain: chain.to_string(),
                reason,
            });
        }
        self.declared.remove(&chain);
        self.section.seen.insert(chain.clone());
        let table = &mut self.section.table;
        table.chains.retain(|c| c.name != chain);
        table.deletes.push(chain);
        Ok(())
    }

    fn flush(&mut self, line: &Line<'_>, rest: &[Token]) -> Result<()> {
        if rest.is_empty() {
            self.section.table.rules.clear();
            return Ok(());
        }
        let (chain, rest) = chain_arg(line, rest)?;
        no_more(line, rest)?;
        self.require(line, &chain)?;
        self.section.table.rules.retain(|r| r.chain != chain);
        Ok(())
    }

    fn policy(&mut self, line: &Line<'_>, rest: &[Token]) -> Result<()> {
        let (chain, rest) = chain_arg(line, rest)?;
        let policy = match rest {
            [p] if !p.quoted && (p.text == "ACCEPT" || p.text == "DROP") => p.text.clone(),
            _ => return Err(line.bad_rule("-P needs a chain and ACCEPT or DROP")),
        };
        if !is_builtin_chain(self.table(), chain.as_str()) {
            return Err(line.bad_rule("-P of a user chain"));
        }
        let chains = &mut self.section.table.chains;
        match chains.iter_mut().find(|c| c.name == chain) {
            Some(decl) => decl.policy = Some(policy),
            None => chains.push(ChainDecl { name: chain, policy: Some(policy) }),
        }
        Ok(())
    }
}

/// Splits off the chain-name word that follows a command.
fn chain_arg<'t>(line: &Line<'_>, rest: &'t [Token]) -> Result<(ChainName, &'t [Token])> {
    match rest.split_first() {
        Some((chain, rest)) if !chain.is_flag() && chain.text != "!" => Ok((line.chain_name(&chain.text)?, rest)),
        _ => Err(Error::MissingChain { line: line.number, text: line.err_text() }),
    }
}

fn no_more(line: &Line<'_>, rest: &[Token]) -> Result<()> {
    match rest.first() {
        None => Ok(()),
        Some(extra) => Err(line.bad_rule(format!("unexpected {:?}", extra.text))),
    }
}

fn is_number(token: &Token) -> bool {
    !token.quoted && !token.text.is_empty() && token.text.bytes().all(|b| b.is_ascii_digit())
}

/// `[packets:bytes]`
fn is_counters(token: &Token) -> bool {
    let Some(inner) = token.text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    !token.quoted && inner.split_once(':').is_some_and(|(p, b)| digits(p) && digits(b))
}

#[cfg(test)]
pub(crate) mod tests;
