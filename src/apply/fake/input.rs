//! Restore input as `iptables-restore` consumes it: one section per `*table` … `COMMIT`, each
//! parsed on its own (earlier sections stay committed when a later one fails), plus the line
//! facts the parsed `Table` does not keep (which line each rule, `-X` and `COMMIT` is on).

use std::collections::{HashMap, HashSet};

use crate::rules::parse::{self, is_builtin_chain};
use crate::rules::ruleset::{ChainName, Table, TableName};

/// Existing chains declared per prefix section: the parser's declaration check is linear in
/// the section's chains, so a long list is split to keep the prefix linear overall.
const PREFIX_CHUNK: usize = 256;

/// A rejected section: the 1-based input line to blame (when known) and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reject {
    /// The input line, as `iptables-restore` numbers it.
    pub line: Option<usize>,
    /// The complaint, worded like iptables'.
    pub message: String,
}

impl Reject {
    pub fn at(line: usize, message: impl Into<String>) -> Self {
        Reject { line: Some(line), message: message.into() }
    }
}

/// One `*table` … `COMMIT` section of the input (or the unterminated rest of it).
#[derive(Debug, Clone)]
pub(super) struct Section<'a> {
    /// 0-based index of the section's first line in the input.
    pub start: usize,
    /// The section's lines, through its `COMMIT`.
    pub lines: &'a [&'a str],
}

/// Splits `lines` after every `COMMIT`; a non-blank rest becomes a last (failing) section.
pub(super) fn sections<'a>(lines: &'a [&'a str]) -> Vec<Section<'a>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.trim() == "COMMIT" {
            out.push(Section { start, lines: &lines[start..=i] });
            start = i + 1;
        }
    }
    let rest = &lines[start..];
    if rest.iter().any(|l| !is_blank(l)) {
        out.push(Section { start, lines: rest });
    }
    out
}

fn is_blank(line: &str) -> bool {
    let line = line.trim();
    line.is_empty() || line.starts_with('#')
}

/// What a section says beyond its parsed rules, with 1-based input line numbers.
#[derive(Debug, Default)]
pub(super) struct Facts {
    /// The table named by the `*table` line, if it names a known one.
    pub table: Option<TableName>,
    /// The `COMMIT` line (or the section's last line).
    pub commit_line: usize,
    /// The line of each `-A`/`-I`/`-D`, in order.
    pub rule_lines: Vec<usize>,
    /// Chains declared with `:NAME` or `-N` (created or, with `--noflush`, flushed).
    pub declared: HashSet<String>,
    /// Chains named by `-F` lines; `None` for a bare `-F` (every chain).
    pub flushes: Vec<Option<String>>,
    /// The line of each `-X`, by chain.
    pub delete_lines: HashMap<String, usize>,
}

impl Facts {
    /// The line of the `index`-th parsed rule. `-F` drops rules while parsing, which breaks the
    /// correspondence; then the `COMMIT` line is blamed.
    pub fn rule_line(&self, index: usize) -> usize {
        let exact = self.flushes.is_empty().then(|| self.rule_lines.get(index).copied()).flatten();
        exact.unwrap_or(self.commit_line)
    }
}

/// Reads the line facts of `section` (whitespace-split words; chain names cannot be quoted).
pub(super) fn facts(section: &Section<'_>) -> Facts {
    let mut facts = Facts { commit_line: section.start + section.lines.len(), ..Facts::default() };
    for (i, line) in section.lines.iter().enumerate() {
        let number = section.start + i + 1;
        let line = line.trim();
        if let Some(name) = line.strip_prefix('*') {
            facts.table = TableName::parse(name.trim()).ok();
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            facts.declared.extend(decl.split_whitespace().next().map(str::to_string));
            continue;
        }
        let mut words = line.split_whitespace().peekable();
        if words.peek().is_some_and(|w| w.starts_with('[') && w.ends_with(']')) {
            words.next();
        }
        let (command, chain) = (words.next(), words.next().map(str::to_string));
        match command {
            Some("-A" | "--append" | "-I" | "--insert" | "-D" | "--delete") => facts.rule_lines.push(number),
            Some("-N" | "--new-chain") => facts.declared.extend(chain),
            Some("-F" | "--flush") => facts.flushes.push(chain),
            Some("-X" | "--delete-chain") => {
                facts.delete_lines.extend(chain.map(|c| (c, number)));
            }
            Some("COMMIT") => facts.commit_line = number,
            _ => {}
        }
    }
    facts
}

/// Parses `section`. With `existing` (the live user chains, under `--noflush`) the parser is
/// first shown them in declaration-only sections, so rules may name chains the input does not
/// declare, as iptables-restore allows; those sections are dropped again and line numbers in
/// errors point into the real input.
pub(super) fn parse_section<'c>(
    section: &Section<'_>,
    table: Option<TableName>,
    existing: impl Iterator<Item = &'c ChainName>,
) -> Result<Table, Reject> {
    let mut text = String::new();
    let (mut prefix_lines, mut prefix_sections) = (0, 0);
    if let Some(table) = table {
        let names: Vec<&ChainName> = existing.filter(|c| !is_builtin_chain(table, c.as_str())).collect();
        for chunk in names.chunks(PREFIX_CHUNK) {
            text.push_str(&format!("*{table}\n"));
            for name in chunk {
                text.push_str(&format!(":{name} - [0:0]\n"));
            }
            text.push_str("COMMIT\n");
            prefix_lines += chunk.len() + 2;
            prefix_sections += 1;
        }
    }
    for line in section.lines {
        text.push_str(line);
        text.push('\n');
    }
    let to_input_line = |line: usize| section.start + line.saturating_sub(prefix_lines).max(1);
    let parsed = parse::parse(&text).map_err(|e| {
        let shown = e.to_string();
        let message = shown.split_once(": ").map_or(shown.as_str(), |(_, rest)| rest).to_string();
        Reject { line: Some(to_input_line(e.line())), message }
    })?;
    let mut tables = parsed.tables.into_iter().skip(prefix_sections);
    match (tables.next(), tables.next()) {
        (Some(table), None) => Ok(table),
        _ => Err(Reject::at(section.start + section.lines.len(), "expected exactly one table section")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_end_at_commit_and_keep_a_bad_rest() {
        let text = "*filter\n:A - [0:0]\nCOMMIT\n\n*nat\n-A B -j C\nCOMMIT\n# done\n*raw\n";
        let lines: Vec<&str> = text.lines().collect();
        let found: Vec<(usize, usize)> = sections(&lines).iter().map(|s| (s.start, s.lines.len())).collect();
        assert_eq!(found, [(0, 3), (3, 4), (7, 2)]);
        let clean: Vec<&str> = "*filter\nCOMMIT\n# end\n\n".lines().collect();
        assert_eq!(sections(&clean).len(), 1);
    }

    #[test]
    fn facts_number_lines_from_the_whole_input() {
        let lines: Vec<&str> =
            "*filter\nCOMMIT\n*nat\n:KUBE-A - [0:0]\n[1:2] -A KUBE-A -j ACCEPT\n-X KUBE-B\nCOMMIT".lines().collect();
        let second = &sections(&lines)[1];
        let f = facts(second);
        assert_eq!(f.table, Some(TableName::Nat));
        assert_eq!((f.rule_lines.clone(), f.commit_line, f.rule_line(0)), (vec![5], 7, 5));
        assert!(f.declared.contains("KUBE-A"));
        assert_eq!(f.delete_lines.get("KUBE-B"), Some(&6));
    }

    #[test]
    fn existing_chains_may_be_used_and_errors_point_into_the_input() {
        let lines: Vec<&str> =
            "# hi\n*nat\n-A KUBE-OLD -j ACCEPT\nCOMMIT\n*nat\n-A KUBE-NONE -j ACCEPT\nCOMMIT".lines().collect();
        let all = sections(&lines);
        let old = ChainName::new("KUBE-OLD").unwrap();
        let table = parse_section(&all[0], Some(TableName::Nat), [&old].into_iter()).unwrap();
        assert_eq!(table.rules.len(), 1);
        assert!(table.chains.is_empty(), "the prefix's declarations are not the input's");
        let err = parse_section(&all[1], Some(TableName::Nat), [&old].into_iter()).unwrap_err();
        assert_eq!(err.line, Some(6));
        assert!(err.message.contains("undeclared chain \"KUBE-NONE\""), "{}", err.message);
    }
}
