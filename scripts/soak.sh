#!/usr/bin/env bash
# Long-form soak of the fault tests (tests/faults/, userspace mode in tests/faults/userspace.rs) at full size:
# 10,000 churn events at 50/s and a 60 s API outage by default, then every other fault test,
# repeated ROUNDS times with a new churn seed each round. Every step is bounded by `timeout`.
# Needs root (real namespaces and iptables), like the tests themselves.
#
#   scripts/soak.sh                                  # defaults below
#   EVENTS=20000 RATE=50 OUTAGE=120 ROUNDS=3 scripts/soak.sh
#
# Prints the tests' own count lines ([churn] …, [api outage] …, …) and a summary; exits non-zero
# on the first failing test.
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS="${EVENTS:-10000}"   # churn events per round
RATE="${RATE:-50}"          # churn events per second
OUTAGE="${OUTAGE:-60}"      # seconds the API server is unreachable
ROUNDS="${ROUNDS:-1}"       # how many times to run everything
SEED="${SEED:-7}"           # first churn seed (each round adds 1)

for n in "$EVENTS" "$RATE" "$OUTAGE" "$ROUNDS" "$SEED"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "soak: EVENTS, RATE, OUTAGE, ROUNDS and SEED must be numbers" >&2; exit 2; }
done
(( RATE > 0 && ROUNDS > 0 && ROUNDS <= 100 )) || { echo "soak: need RATE > 0 and 1 <= ROUNDS <= 100" >&2; exit 2; }

echo "soak: building the test binaries"
timeout 1800 cargo test --test faults --no-run

log="$(mktemp -t kubenat-soak.XXXXXX)"
trap 'rm -f "$log" "$log.summary"' EXIT
started=$SECONDS

# run LIMIT_SECONDS TEST_FILE TEST_NAME: one test, bounded, its count lines kept.
run() {
  local limit="$1" file="$2" name="$3"
  echo "soak: $file::$name (limit ${limit}s)"
  if ! timeout --kill-after=15 "$limit" cargo test --test "$file" "$name" -- --exact --nocapture --test-threads 1 \
      >"$log" 2>&1; then
    cat "$log"
    echo "soak: FAILED: $file::$name (round $round)" >&2
    exit 1
  fi
  # (libtest prints "test NAME ... " on the line where a test's first output line starts)
  grep -oE '\[[a-z0-9 -]+\] .*' "$log" | tee -a "$log.summary" || true
}

: >"$log.summary"
for ((round = 1; round <= ROUNDS; round++)); do
  echo "soak: round $round of $ROUNDS"
  KUBENAT_SOAK_CHURN_EVENTS="$EVENTS" KUBENAT_SOAK_CHURN_RATE="$RATE" KUBENAT_SOAK_SEED="$((SEED + round))" \
    run "$((EVENTS / RATE + 300))" faults churn::random_churn_keeps_services_with_ready_endpoints_answering
  KUBENAT_SOAK_OUTAGE_SECS="$OUTAGE" \
    run "$((OUTAGE + 300))" faults api_outage::api_unreachable_then_compacted_keeps_forwarding_and_applies_changes_after
  run 300 faults restart::kill_9_mid_sync_then_restart_converges_without_dropping_traffic
  run 300 faults kernel::failing_restores_keep_the_last_rules_forwarding_and_recover
  run 300 faults kernel::held_xtables_lock_and_a_neighbour_rewriting_its_chains
  run 300 faults kernel::nat_table_flushed_behind_our_back_is_restored_within_one_sync_period
  run 300 faults userspace::backends_killed_and_restarted_under_load
  run 300 faults userspace::clients_that_never_read_neither_block_others_nor_grow_memory
done

echo
echo "soak: all passed in $((SECONDS - started)) s: $ROUNDS round(s), $EVENTS churn events at $RATE/s per round, ${OUTAGE} s API outage"
cat "$log.summary"
