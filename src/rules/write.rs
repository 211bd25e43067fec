//! Writes a `Ruleset` as `iptables-restore` input. All quoting happens here, once (comment
//! texts are made safe when a rule is built, by `ruleset::comment`).

use std::fmt::{self, Display, Write as _};

use super::ruleset::{Arg, ArgRef, Rule, RuleOp, Ruleset, Table};

/// Whether `value` can be written without quotes.
fn is_bare(value: &str) -> bool {
    !value.is_empty()
        && !value.starts_with('-')
        && !value.starts_with('!')
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '-' | '_' | '.' | '/' | ':' | ',' | '+' | '=' | '@' | '%' | '[' | ']')
        })
}

/// Writes one value, quoted when it needs to be. Control characters (which cannot appear in
/// a restore line) become spaces; the converter rejects such input long before this point.
pub fn write_value(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    if is_bare(value) {
        return out.write_str(value);
    }
    out.write_char('"')?;
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.write_char('\\')?;
                out.write_char(c)?;
            }
            c if c.is_control() => out.write_char(' ')?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

impl Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negated {
            f.write_str("! ")?;
        }
        f.write_str(&self.flag)?;
        for v in &self.values {
            f.write_char(' ')?;
            write_value(f, v)?;
        }
        Ok(())
    }
}

impl Display for ArgRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negated {
            f.write_str("! ")?;
        }
        f.write_str(self.flag)?;
        for v in self.values.iter() {
            f.write_char(' ')?;
            write_value(f, v)?;
        }
        Ok(())
    }
}

impl Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_rule(f, self)
    }
}

/// Writes one rule line (without the newline).
fn write_rule(out: &mut impl fmt::Write, rule: &Rule) -> fmt::Result {
    out.write_str(match rule.op {
        RuleOp::Append => "-A ",
        RuleOp::Insert(_) => "-I ",
        RuleOp::Delete => "-D ",
    })?;
    out.write_str(rule.chain.as_str())?;
    if let RuleOp::Insert(Some(pos)) = rule.op {
        write!(out, " {pos}")?;
    }
    for arg in &rule.args {
        out.write_char(' ')?;
        if arg.negated {
            out.write_str("! ")?;
        }
        out.write_str(arg.flag)?;
        for v in arg.values.iter() {
            out.write_char(' ')?;
            write_value(out, v)?;
        }
    }
    Ok(())
}

/// Text is built in a buffer of about this size and handed to the formatter in one piece:
/// a formatter call per word costs more than the words (430,000 lines at 10k services).
const CHUNK: usize = 64 * 1024;

impl Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_sections(f, &[self])
    }
}

/// Writes several sections of one table as one: every part's declarations, then deleted
/// chains' flushes, then every part's rules, then the deletes.
fn write_sections(f: &mut fmt::Formatter<'_>, parts: &[&Table]) -> fmt::Result {
    let Some(first) = parts.first() else {
        return Ok(());
    };
    let mut buf = String::with_capacity(CHUNK + 1024);
    let flush = |buf: &mut String, f: &mut fmt::Formatter<'_>, force: bool| {
        if force || buf.len() >= CHUNK {
            f.write_str(buf)?;
            buf.clear();
        }
        Ok(())
    };
    buf.push('*');
    buf.push_str(first.name.as_str());
    buf.push('\n');
    for chain in parts.iter().flat_map(|t| &t.chains) {
        buf.push(':');
        buf.push_str(chain.name.as_str());
        buf.push(' ');
        buf.push_str(chain.policy.as_deref().unwrap_or("-"));
        buf.push_str(" [0:0]\n");
        flush(&mut buf, f, false)?;
    }
    for chain in parts.iter().flat_map(|t| &t.deletes) {
        buf.push(':');
        buf.push_str(chain.as_str());
        buf.push_str(" - [0:0]\n");
        flush(&mut buf, f, false)?;
    }
    for rule in parts.iter().flat_map(|t| &t.rules) {
        write_rule(&mut buf, rule)?;
        buf.push('\n');
        flush(&mut buf, f, false)?;
    }
    for chain in parts.iter().flat_map(|t| &t.deletes) {
        buf.push_str("-X ");
        buf.push_str(chain.as_str());
        buf.push('\n');
        flush(&mut buf, f, false)?;
    }
    buf.push_str("COMMIT\n");
    flush(&mut buf, f, true)
}

/// Two rulesets written as one restore input, table by table (tables of the first in its
/// order, then those only in the second), without copying either: how a full sync writes a
/// large rendered ruleset plus its few extras (canaries, jumps, deletes). The parts must not
/// declare or delete the same chain twice.
pub struct Merged<'a>(pub &'a Ruleset, pub &'a Ruleset);

impl Display for Merged<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Merged(main, extra) = *self;
        for table in &main.tables {
            match extra.table(table.name) {
                Some(more) => write_sections(f, &[table, more])?,
                None => write_sections(f, &[table])?,
            }
        }
        for table in extra.tables.iter().filter(|t| main.table(t.name).is_none()) {
            write_sections(f, &[table])?;
        }
        Ok(())
    }
}

impl Display for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for table in &self.tables {
            write!(f, "{table}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;
    use crate::rules::ruleset::{ChainName, TableName};

    #[test]
    fn quotes_only_when_needed() {
        let mut s = String::new();
        write_value(&mut s, "default/web:http").unwrap();
        assert_eq!(s, "default/web:http");
        s.clear();
        write_value(&mut s, "a b").unwrap();
        assert_eq!(s, "\"a b\"");
        s.clear();
        write_value(&mut s, "say \"hi\"\n").unwrap();
        assert_eq!(s, "\"say \\\"hi\\\" \"");
        s.clear();
        write_value(&mut s, "").unwrap();
        assert_eq!(s, "\"\"");
        s.clear();
        write_value(&mut s, "-j").unwrap();
        assert_eq!(s, "\"-j\"", "a value that looks like a flag is quoted");
    }

    #[test]
    fn writes_restore_text() {
        let mut t = Table::new(TableName::Nat);
        let svc = ChainName::new("KUBE-SERVICES").unwrap();
        t.declare(&svc);
        t.rules.push(
            Rule::append(&svc)
                .comment("ns/a cluster IP")
                .proto(Protocol::Udp)
                .dst("10.0.0.1".parse().unwrap())
                .dport(53)
                .jump("KUBE-SVC-X"),
        );
        t.deletes.push(ChainName::new("KUBE-SVC-OLD").unwrap());
        let text = Ruleset { tables: vec![t] }.to_string();
        assert_eq!(
            text,
            "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-OLD - [0:0]\n\
             -A KUBE-SERVICES -m comment --comment \"ns/a cluster IP\" -m udp -p udp -d 10.0.0.1 --dport 53 -j KUBE-SVC-X\n\
             -X KUBE-SVC-OLD\nCOMMIT\n"
        );
    }
}
