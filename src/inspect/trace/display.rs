//! Human-readable trace output: one line per outcome, then the notes.

use std::fmt;

use super::{Outcome, Trace, Verdict};

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, chain, detail) = match self {
            Verdict::Dnat(to) => return write!(f, "{to}"),
            Verdict::Redirect(port) => return write!(f, "REDIRECT to local port {port}"),
            Verdict::Accept => return f.write_str("no service matched"),
            Verdict::FilterAccept { chain, comment } => ("ACCEPT", chain, comment.as_deref()),
            Verdict::Drop { chain, comment } => ("DROP", chain, comment.as_deref()),
            Verdict::Reject { chain, comment } => ("REJECT", chain, comment.as_deref()),
            Verdict::Aborted { chain, reason } => ("ABORTED", chain, Some(reason.as_str())),
        };
        match detail {
            Some(detail) => write!(f, "{what} ({detail}) in {chain}"),
            None => write!(f, "{what} in {chain}"),
        }
    }
}

impl fmt::Display for Outcome {
    /// `10.244.2.7:8080 p=0.333 masquerade=no via nat/PREROUTING > nat/KUBE-SERVICES > …`, then
    /// `; rule: -A CHAIN …` when a rule accepted, dropped or rejected the packet.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} p={:.3}", self.verdict, self.probability)?;
        let delivered = matches!(
            self.verdict,
            Verdict::Dnat(_) | Verdict::Redirect(_) | Verdict::Accept | Verdict::FilterAccept { .. }
        );
        if delivered {
            write!(f, " masquerade={}", if self.masquerade { "yes" } else { "no" })?;
        }
        if !self.chains.is_empty() {
            write!(f, " via {}", self.chains.join(" > "))?;
        }
        if let Some(rule) = &self.rule {
            write!(f, "; rule: {rule}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for outcome in &self.outcomes {
            if outcome.verdict == Verdict::Accept {
                let rest = outcome.to_string();
                let rest = rest.strip_prefix("no service matched").unwrap_or(&rest);
                writeln!(f, "no service matched (packet continues to {}){rest}", self.destination)?;
            } else {
                writeln!(f, "{outcome}")?;
            }
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}
