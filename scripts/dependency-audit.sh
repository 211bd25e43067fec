#!/usr/bin/env bash
# Dependency audit with cargo-deny (deny.toml):
#   - licences, bans (duplicates, wildcards, OpenSSL) and sources: always checked, offline;
#   - advisories (RustSec): checked when the advisory database can be fetched, or when a copy
#     fetched earlier exists; otherwise the log says plainly that this part was SKIPPED.
#
# cargo-deny is installed with `cargo install --locked` at a pinned version when missing. It is
# compiled once (a few minutes on a small machine) and reused from ~/.cargo/bin afterwards;
# the checks themselves take seconds. Usage: scripts/dependency-audit.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2

if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
  echo "dependency-audit: installing cargo-deny $CARGO_DENY_VERSION"
  start=$(date +%s)
  cargo install --locked "cargo-deny@$CARGO_DENY_VERSION"
  echo "dependency-audit: cargo-deny installed in $(($(date +%s) - start)) s"
fi

# cargo deny reads `cargo metadata` offline, which needs every crate in Cargo.lock on disk,
# including the platform-specific ones no Linux build downloads: fetch them first, so the audit
# also works in a fresh clone on a machine that has never built the project.
cargo fetch --locked

echo "dependency-audit: licences, bans and sources"
cargo deny --offline check --hide-inclusion-graph licenses bans sources

echo "dependency-audit: advisories"
db_dir="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if timeout 120 cargo deny fetch db >/dev/null 2>&1; then
  cargo deny --offline check --hide-inclusion-graph advisories
  echo "dependency-audit: advisories checked against a freshly fetched database"
elif compgen -G "$db_dir/advisory-db-*/crates" >/dev/null; then
  cargo deny --offline check --hide-inclusion-graph advisories
  echo "dependency-audit: advisories checked against an earlier copy of the database in $db_dir" \
    "(the fetch failed: it may be out of date)"
else
  echo "dependency-audit: SKIPPED advisories: the RustSec advisory database could not be fetched" \
    "(no network access to it from here) and no earlier copy exists; licences, bans and sources" \
    "were checked. Run this script where the database is reachable to check advisories."
fi
