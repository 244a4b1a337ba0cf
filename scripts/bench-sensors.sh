#!/usr/bin/env bash
# Sensor benchmarks for the eBPF sensors issue (docs/benchmarks.md, "Sensors"). Each part
# runs alone; with no argument all run, in this order:
#
#   syscall  CPU time per syscall: none / empty-program floors / Ward's filewrite /
#            sys_enter+sys_exit dispatchers, on an unwatched write, getppid and a watched
#            write with capture, alternating rounds, medians       (~2-4 min)
#   runtime  in-kernel run time of Ward's write/open/close programs against an empty
#            program on the same tracepoint, from the kernel's BPF statistics (~1 min)
#   tarprobe tar of /usr/include x4: job CPU with no probe / the floor / the file probe,
#            15 rotated rounds, paired medians (~2 min)
#   exec     fork+exec loop: execs/s and agent CPU, without and with the agent
#   tar      tar of /usr/include into a pipe, and into a watched directory
#   gobuild  go build -a of a small module with a cold GOCACHE     (~1 min per run)
#   rate     watched-write events/s through ring buffer -> decoder -> assembler: drain
#            capacity, paced rates and drops, and a CPU profile of the drain
#
#   scripts/bench-sensors.sh [syscall|runtime|tarprobe|exec|tar|gobuild|rate|all]...
#
# Knobs: ROUNDS (syscall: 5, agent workloads: 3), OPS (syscall ops per measurement,
# 200000), WARD_BENCH_SETUPS / WARD_BENCH_RATES / WARD_BENCH_EXECS (see the benchmarks'
# doc comments). Root is needed. Run on a quiet machine; the load average is printed before
# and after each part and figures under load are provisional.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench-sensors: needs root (loads BPF programs)" >&2
  exit 1
fi
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(all)
want() {
  local p
  for p in "${parts[@]}"; do
    [ "$p" = all ] || [ "$p" = "$1" ] && return 0
  done
  return 1
}
load() { cut -d' ' -f1-3 /proc/loadavg; }
# Keep the benchmark lines, the summaries and the log lines; drop go test's preamble.
filter() { grep -vE '^(goos|goarch|pkg|cpu):|^PASS$|^ok |^\s*$' || true; }

echo "== machine: $(nproc) cores, load $(load), kernel $(uname -r)"
# A BPF program on any syscall tracepoint makes every syscall of every process slower, so
# a leftover agent or another test would turn "without" into "with". The syscall benchmark
# checks this itself per round; here it is said up front.
if pgrep -a ward-agent >/dev/null; then
  echo "!! a ward-agent is running: the 'without' figures below are not without"
  pgrep -a ward-agent
fi
if command -v bpftool >/dev/null; then
  hooks=$(bpftool link show 2>/dev/null | grep -cE 'sys_(enter|exit)' || true)
  [ "$hooks" != 0 ] && echo "!! $hooks BPF links on syscall tracepoints exist before the run (bpftool link show)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if want syscall; then
  echo
  echo "== syscall: thread CPU ns per syscall by sensor setup (load before: $(load))"
  go test -c -o "$tmp/filewrite.test" ./bpf/filewrite
  (cd bpf/filewrite && WARD_BENCH_ROUNDS=${ROUNDS:-5} "$tmp/filewrite.test" -test.run '^$' \
    -test.bench '^BenchmarkSyscallCost$' -test.benchtime "${OPS:-200000}x" -test.timeout 60m | filter)
  echo "   load after: $(load)"
fi

if want runtime; then
  echo
  echo "== runtime: ns per program run, Ward's filters vs an empty program (load before: $(load))"
  [ -x "$tmp/filewrite.test" ] || go test -c -o "$tmp/filewrite.test" ./bpf/filewrite
  (cd bpf/filewrite && WARD_BENCH_ROUNDS=${ROUNDS:-5} "$tmp/filewrite.test" -test.run '^$' \
    -test.bench '^BenchmarkFilterRunTime$' -test.benchtime 1x -test.timeout 30m | filter)
  echo "   load after: $(load)"
fi

if want tarprobe; then
  echo
  echo "== tarprobe: a syscall-heavy job under no probe / the floor / the file probe (load before: $(load))"
  [ -x "$tmp/filewrite.test" ] || go test -c -o "$tmp/filewrite.test" ./bpf/filewrite
  (cd bpf/filewrite && "$tmp/filewrite.test" -test.run '^$' \
    -test.bench '^BenchmarkTarSlowdown$' -test.benchtime 1x -test.timeout 30m | filter)
  echo "   load after: $(load)"
fi

agent_parts=()
for p in exec tar gobuild; do
  if want "$p"; then
    case $p in
    tar) agent_parts+=(tar tar-watched) ;;
    *) agent_parts+=("$p") ;;
    esac
  fi
done
if [ ${#agent_parts[@]} -gt 0 ] || want rate; then
  go test -c -o "$tmp/tests.test" ./tests
fi
if [ ${#agent_parts[@]} -gt 0 ]; then
  echo
  echo "== ${agent_parts[*]}: without vs with a running agent, alternating (load before: $(load))"
  (cd tests && WARD_BENCH_ROUNDS=${ROUNDS:-3} WARD_BENCH_WORKLOADS="${agent_parts[*]}" "$tmp/tests.test" -test.run '^$' \
    -test.bench '^BenchmarkAgentOverhead$' -test.benchtime 1x -test.timeout 60m | filter)
  echo "   load after: $(load)"
fi

if want rate; then
  echo
  echo "== rate: watched-write events/s, ring buffer -> decoder -> assembler (load before: $(load))"
  (cd tests && WARD_BENCH_PROFILE="$tmp/drain.prof" "$tmp/tests.test" -test.run '^$' \
    -test.bench '^BenchmarkWatchedEventRate$' -test.benchtime 1x -test.timeout 30m | filter)
  if [ -s "$tmp/drain.prof" ]; then
    echo "-- where the drain's CPU goes (cumulative, top 25)"
    go tool pprof -top -cum -nodecount=25 "$tmp/tests.test" "$tmp/drain.prof" 2>/dev/null |
      grep -E '^ +[0-9.]+(m?s)? ' | grep -vE 'runtime\.(goexit|mcall|park_m|schedule|findRunnable|systemstack)$' || true
  fi
  echo "   load after: $(load)"
fi
