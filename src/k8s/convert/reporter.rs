//! Collects the problems of one object, naming it in each, with a cap so an absurd object
//! (10,000 bad endpoints) yields a readable report.

use crate::k8s::manifests::Problem;

/// Most problems reported for one object; the rest are counted in a last line.
const MAX_PER_OBJECT: usize = 20;

/// Reports problems about one object into a shared list.
pub(super) struct Reporter<'a> {
    label: String,
    problems: &'a mut Vec<Problem>,
    shown: usize,
    hidden: usize,
}

impl<'a> Reporter<'a> {
    /// Reports about the object `label` (e.g. `Service default/web`).
    pub(super) fn new(label: String, problems: &'a mut Vec<Problem>) -> Self {
        Reporter { label, problems, shown: 0, hidden: 0 }
    }

    /// The object's label.
    pub(super) fn label(&self) -> &str {
        &self.label
    }

    /// Records one problem.
    pub(super) fn report(&mut self, reason: impl Into<String>) {
        if self.shown < MAX_PER_OBJECT {
            self.shown += 1;
            let object = Some(self.label.clone());
            self.problems.push(Problem { source: None, object, reason: reason.into() });
        } else {
            self.hidden += 1;
        }
    }
}

impl Drop for Reporter<'_> {
    fn drop(&mut self) {
        if self.hidden > 0 {
            let reason = format!("{} more problems not shown", self.hidden);
            let object = Some(std::mem::take(&mut self.label));
            self.problems.push(Problem { source: None, object, reason });
        }
    }
}
