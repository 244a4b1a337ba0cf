#!/usr/bin/env bash
# `make bench`: every benchmark that backs a figure in docs/benchmarks.md, with the peer
# each is compared to run in the same script. Root is needed for the eBPF and end-to-end
# parts. About 15 minutes; run on a quiet machine and note the load (printed first).
# Parts alone: scripts/bench-sensors.sh [syscall|exec|tar|gobuild|rate].
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), kernel $(uname -r)"

echo
echo "== sensors: syscall cost against the empty-program floor and dispatchers, exec load,"
echo "   tar and a cold Go build with and without the agent, watched-write event rate"
ROUNDS=${SENSOR_ROUNDS:-3} scripts/bench-sensors.sh all

echo
echo "== spool append: telemetry (group-committed) and findings (durable on return; serial and 4-way)"
go test ./agent/spool -run '^$' -bench 'Append' -benchtime 3000x | grep -E '^Benchmark'

echo
echo "== probe to store: events/s at paced offered loads, with drop counters"
WARD_BENCH_FILES=${WARD_BENCH_FILES:-10000} WARD_BENCH_RATES=${WARD_BENCH_RATES:-"2000 0"} go test ./tests -run '^$' -bench 'ProbeToStore' -benchtime 1x -timeout 60m |
  grep -E '^Benchmark|drop counter'

echo
echo "== collector ingest: ${WARD_LOADTEST_AGENTS:-1000} simulated agents (mTLS, real enrolment) against one collector"
echo "   closed loop (capacity), then paced at 50k and 20k events/s offered (latency); SQLite, then PostgreSQL"
# The peer: the collector of WARD_BENCH_PEER_REV (default 143b864, before group commit and
# multi-row inserts), built from `git archive` and driven by the same load generator.
peer_rev=${WARD_BENCH_PEER_REV:-143b864}
peer_dir=$(mktemp -d)
trap 'rm -rf "$peer_dir"' EXIT
if git archive "$peer_rev" | tar -x -C "$peer_dir" && (cd "$peer_dir" && CGO_ENABLED=0 go build -o bin/ ./cmd/ward-collector); then
  for rate in 0 50000; do
    echo "-- peer $peer_rev, store=sqlite offered=${rate/#0/closed-loop}"
    WARD_LOADTEST_COLLECTOR_BIN="$peer_dir/bin/ward-collector" WARD_LOADTEST_RATE=$rate go test ./collector/loadtest \
      -run '^$' -bench 'Ingest' -benchtime 1x -timeout 30m | grep -E '^Benchmark|agents=|collector:|loadgen:'
  done
else
  echo "-- peer $peer_rev could not be built; no side-by-side figure"
fi
for store in sqlite postgres; do
  for rate in 0 50000 20000; do
    echo "-- this tree, store=$store offered=${rate/#0/closed-loop}"
    WARD_LOADTEST_STORE=$store WARD_LOADTEST_RATE=$rate go test ./collector/loadtest -run '^$' -bench 'Ingest' \
      -benchtime 1x -timeout 30m | grep -E '^Benchmark|agents=|collector:|loadgen:'
  done
done
go test ./collector/store -run '^$' -bench 'InsertEventsConcurrent' -benchtime 3000x | grep -E '^Benchmark'

echo
echo "== policy: one decision with the default pack (mixed inputs; plain write with nothing found)"
go test ./policy -run '^$' -bench 'Evaluate' -benchtime 1s -count 5 | grep -E '^Benchmark'

for extra in classifiers/bench.sh classifiers/traffic/bench.sh; do
  if [ -x "$extra" ]; then
    echo
    echo "== $extra"
    "$extra"
  fi
done
