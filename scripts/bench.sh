#!/usr/bin/env bash
# `make bench`: every benchmark that backs a figure in docs/benchmarks.md, with the peer
# each is compared to run in the same script. Root is needed for the eBPF and end-to-end
# parts. Long; run on a quiet machine and note the load (printed first).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), kernel $(uname -r)"

echo
echo "== write(2) cost on an unwatched file: without the probes vs with them (same run)"
go test ./bpf/filewrite -run '^$' -bench 'UnwatchedWrite' -benchtime 2s -count 5 | grep -E '^Benchmark|ns/op'

echo
echo "== spool append: telemetry (group-committed) and findings (durable on return; serial and 4-way)"
go test ./agent/spool -run '^$' -bench 'Append' -benchtime 3000x | grep -E '^Benchmark'

echo
echo "== probe to store: events/s at paced offered loads, with drop counters"
WARD_BENCH_FILES=${WARD_BENCH_FILES:-10000} go test ./tests -run '^$' -bench 'ProbeToStore' -benchtime 1x -timeout 60m |
  grep -E '^Benchmark|drop counter'

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
