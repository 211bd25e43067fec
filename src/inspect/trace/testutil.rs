//! Test-only reader of small restore/save texts into a `Ruleset`, so tracer and checker tests can
//! be written as rules rather than builder calls. Not the real parser (`rules::parse`).

pub(crate) mod fixtures;

use crate::rules::ruleset::{Arg, ChainDecl, ChainName, Rule, RuleOp, Ruleset, TableName};

/// Splits a line into words; double-quoted strings (with `\"` escapes) are one word.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => word.extend(chars.next()),
                    '"' => break,
                    c => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
    out
}

/// Groups words into `[!] flag values…` arguments.
fn args(words: &[String]) -> Vec<Arg> {
    let mut out: Vec<Arg> = Vec::new();
    let mut negate = false;
    for w in words {
        if w == "!" {
            negate = true;
        } else if w.starts_with('-') && w.len() > 1 {
            out.push(Arg { negated: negate, flag: w.clone().into(), values: Vec::new() });
            negate = false;
        } else if let Some(last) = out.last_mut() {
            last.values.push(w.clone());
        }
    }
    out
}

/// Reads `*table`, `:CHAIN POLICY [..]`, `-A/-I CHAIN …`, `-X CHAIN` and `COMMIT` lines.
/// Panics on anything else: test input only.
pub(crate) fn rules(text: &str) -> Ruleset {
    let mut ruleset = Ruleset::default();
    let mut table: Option<TableName> = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(name) = line.strip_prefix('*') {
            let name = TableName::parse(name).unwrap();
            ruleset.table_mut(name);
            table = Some(name);
            continue;
        }
        if line == "COMMIT" {
            continue;
        }
        let t = ruleset.table_mut(table.expect("rule before *table"));
        let w = words(line);
        if let Some(decl) = line.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            let name = ChainName::new(parts.next().unwrap()).unwrap();
            let policy = parts.next().filter(|p| *p != "-").map(str::to_string);
            t.chains.push(ChainDecl { name, policy });
            continue;
        }
        let chain = ChainName::new(w[1].as_str()).unwrap();
        match w[0].as_str() {
            "-X" => t.deletes.push(chain),
            "-A" => t.rules.push(Rule::new(RuleOp::Append, chain, args(&w[2..]))),
            "-I" => match w.get(2).and_then(|p| p.parse().ok()) {
                Some(pos) => t.rules.push(Rule::new(RuleOp::Insert(Some(pos)), chain, args(&w[3..]))),
                None => t.rules.push(Rule::new(RuleOp::Insert(None), chain, args(&w[2..]))),
            },
            other => panic!("unsupported line {other}: {line}"),
        }
    }
    ruleset
}
