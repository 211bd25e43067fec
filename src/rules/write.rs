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
        match self.op {
            RuleOp::Append => write!(f, "-A {}", self.chain)?,
            RuleOp::Insert(None) => write!(f, "-I {}", self.chain)?,
            RuleOp::Insert(Some(pos)) => write!(f, "-I {} {}", self.chain, pos)?,
            RuleOp::Delete => write!(f, "-D {}", self.chain)?,
        }
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

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
    writeln!(f, "*{}", first.name)?;
    for chain in parts.iter().flat_map(|t| &t.chains) {
        writeln!(f, ":{} {} [0:0]", chain.name, chain.policy.as_deref().unwrap_or("-"))?;
    }
    for chain in parts.iter().flat_map(|t| &t.deletes) {
        writeln!(f, ":{chain} - [0:0]")?;
    }
    for rule in parts.iter().flat_map(|t| &t.rules) {
        writeln!(f, "{rule}")?;
    }
    for chain in parts.iter().flat_map(|t| &t.deletes) {
        writeln!(f, "-X {chain}")?;
    }
    writeln!(f, "COMMIT")
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
