#!/usr/bin/env bash
# Bounded coverage-guided fuzzing of the parsers (cargo fuzz / libFuzzer).
#
#   scripts/fuzz-smoke.sh                 # every target, FUZZ_SECONDS (default 30) each
#   FUZZ_SECONDS=600 scripts/fuzz-smoke.sh iptables_parse manifests
#
# Seeds come from fuzz/corpus/<target>/ (committed, read-only here); inputs the fuzzer finds
# go to fuzz/work/<target>/ (ignored by git), so repeated runs build on each other. A crash
# fails the script and leaves the input in fuzz/artifacts/<target>/: copy it to
# fuzz/regressions/<target>/ so the regular test suite replays it.
#
# Only a stable toolchain is installed: RUSTC_BOOTSTRAP=1 lets it accept the unstable flags
# cargo fuzz passes. The sanitizer is off (the crate forbids unsafe code; panics, overflow
# checks and debug assertions are what we look for), which also keeps the build short.
# cargo-fuzz is installed if missing.
#
# FUZZ_PROFILE=dev (what CI uses) builds without optimisation: about a third less compile
# time, fewer executions per second; the default, release, is for long runs. The build goes
# to FUZZ_TARGET_DIR (default ~/.cache/kubenat/fuzz-target), outside the work tree, so that
# later runs on the same machine, CI's fresh clones included, recompile only kubenat.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(iptables_parse manifests subnet_env dump_diff)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: installing cargo-fuzz"
  cargo install --locked cargo-fuzz@0.13.2
fi

export RUSTC_BOOTSTRAP=1
target_dir="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubenat/fuzz-target}"
flags=(--sanitizer none --debug-assertions --target-dir "$target_dir")
case "${FUZZ_PROFILE:-release}" in
  dev) flags+=(--dev) ;;
  release) ;;
  *) echo "fuzz-smoke: FUZZ_PROFILE must be dev or release" >&2; exit 2 ;;
esac
build_start=$(date +%s)
(cd fuzz && cargo fuzz build "${flags[@]}")
echo "fuzz-smoke: build (${FUZZ_PROFILE:-release}) took $(($(date +%s) - build_start)) s"

for target in "${targets[@]}"; do
  mkdir -p "fuzz/work/$target"
  log="fuzz/work/$target.log"
  echo "fuzz-smoke: $target for ${seconds} s"
  status=0
  (cd fuzz && cargo fuzz run "${flags[@]}" "$target" "work/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1) \
      >"$log" 2>&1 || status=$?
  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+ +DONE' "$log" | sed "s/^/fuzz-smoke: $target: /" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log"
    echo "fuzz-smoke: $target FAILED (exit $status); the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
echo "fuzz-smoke: ${#targets[@]} targets, no crash"
