//! `--dry-run`: every restore input is logged and applied to an in-memory kernel instead.

use crate::apply::exec::{Iptables, RestoreOptions, Result};
use crate::apply::fake::FakeIptables;
use crate::model::IpFamily;
use crate::rules::ruleset::TableName;

/// Logs each restore input, then applies it to a [`FakeIptables`].
#[derive(Debug, Default)]
pub struct DryRun(FakeIptables);

impl Iptables for DryRun {
    fn restore(&self, family: IpFamily, input: &str, opts: RestoreOptions) -> Result<()> {
        tracing::info!(%family, bytes = input.len(), "dry run: restore input follows\n{input}");
        self.0.restore(family, input, opts)
    }

    fn save(&self, family: IpFamily, table: Option<TableName>) -> Result<String> {
        self.0.save(family, table)
    }
}
