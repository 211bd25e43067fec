//! The human-readable diff report (`Display` for `Diff`): restore-like rule lines marked
//! `-` (only in A), `+` (only in B) and `~` (moved), grouped by table and chain.

use std::fmt::{self, Display, Formatter};

use super::{ChainDiff, ChainProblem, Diff, RuleChange, Side};

impl Display for Side {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::A => "A",
            Side::B => "B",
        })
    }
}

impl Display for RuleChange {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            RuleChange::OnlyInA(rule) => write!(f, "- {rule}"),
            RuleChange::OnlyInB(rule) => write!(f, "+ {rule}"),
            RuleChange::Moved { rule, position_a, position_b } => {
                write!(f, "~ {rule}  (moved: rule {position_a} in A, {position_b} in B)")
            }
        }
    }
}

impl Display for ChainProblem {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            ChainProblem::PolicyDiffers { a, b } => write!(f, "! policy {a} in A, {b} in B"),
            ChainProblem::NotLast { side, position, len } => {
                write!(f, "! the \"must be the last rule\" rule is rule {position} of {len} in {side}")
            }
            ChainProblem::OrderDiffers => {
                f.write_str("! the rules in both are in a different order (chain too long to show where)")
            }
        }
    }
}

impl Display for ChainDiff {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self.only_in {
            Some(side) => writeln!(f, "chain only in {side}: {}", self.chain)?,
            None => writeln!(f, "chain {}:", self.chain)?,
        }
        for problem in &self.problems {
            writeln!(f, "{problem}")?;
        }
        for change in &self.changes {
            writeln!(f, "{change}")?;
        }
        Ok(())
    }
}

impl Display for Diff {
    /// The report, ending with a one-line summary (`no differences` when empty).
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for table in &self.tables {
            writeln!(f, "*{}", table.table)?;
            for chain in &table.chains {
                write!(f, "{chain}")?;
            }
        }
        if self.is_empty() {
            return writeln!(f, "no differences");
        }
        write!(f, "{} rules only in A, {} only in B", self.rules_only_in(Side::A), self.rules_only_in(Side::B))?;
        let extras = [
            (self.moved(), "rules moved"),
            (self.chains_only_in(Side::A), "chains only in A"),
            (self.chains_only_in(Side::B), "chains only in B"),
            (self.problems(), "other differences"),
        ];
        for (count, what) in extras {
            if count > 0 {
                write!(f, ", {count} {what}")?;
            }
        }
        writeln!(f)
    }
}
