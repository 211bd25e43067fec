#!/usr/bin/env bash
# The whole test suite, also on a fresh Debian machine: installs what the real-kernel tests and
# the image test need when it is missing (scripts/install-test-deps.sh), then runs cargo test.
# Run it as root, or as a user with sudo (it runs itself again with sudo, keeping the user's
# Rust toolchain). Extra arguments go to cargo test, e.g. scripts/test.sh --test dropin.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "test: run as root (the real-kernel tests create network namespaces)" >&2
    exit 1
  fi
  export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
  exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME,CI,KUBENAT_IMAGE_STORE,CARGO_INCREMENTAL "$0" "$@"
fi
scripts/install-test-deps.sh
exec cargo test --locked "$@"
