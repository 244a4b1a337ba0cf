#!/usr/bin/env bash
# Network benchmark for `ward-agent analyze`: packets per second on one core over a large
# synthetic capture (TLS with split post-quantum ClientHellos, QUIC v1 Initials, DNS, HTTP,
# STUN/RTP, bulk data; see internal/gencap), and tshark extracting the same fields (TLS/QUIC
# SNI and DNS query names) from the same file, as a ratio.
#
#   classifiers/traffic/bench.sh                 # 1,000,000 packets
#   PACKETS=3000000 RUNS=5 TSHARK_RUNS=1 classifiers/traffic/bench.sh
#   WARD_AGENT=bin/ward-agent ...   # measure an existing binary
#   WARD_BASELINE=/tmp/ward-agent.old ...  # also time an older binary, runs alternating
#                                          # with the new one (before/after under equal load)
#
# Both tools are pinned to one CPU with taskset (ward also with GOMAXPROCS=1) and read a
# file already in the page cache; the median of RUNS runs counts (TSHARK_RUNS for tshark).
# Wall and CPU (user+sys) time are both reported: on a shared machine CPU time is the
# steadier per-core figure, and the ratio of CPU times is the headline. The load average
# before and after is printed with the results. Output: a summary block, whether the aims
# (>= 1M packets per CPU-second, >= 50x tshark by CPU time) are met, and the same numbers
# as key=value lines for scripts.
set -euo pipefail
cd "$(dirname "$0")/../.."
PACKETS=${PACKETS:-1000000}
RUNS=${RUNS:-3}
TSHARK_RUNS=${TSHARK_RUNS:-$RUNS}
CPU=${CPU:-0}
DIR=${BENCH_DIR:-$(mktemp -d /tmp/ward-netbench.XXXXXX)}
mkdir -p "$DIR"
GO=${GO:-go}

# WARD_AGENT=path uses an already built binary instead of building one.
if [ -n "${WARD_AGENT:-}" ]; then
	cp "$WARD_AGENT" "$DIR/ward-agent"
else
	$GO build -o "$DIR/ward-agent" ./cmd/ward-agent
fi
$GO build -o "$DIR/gencap" ./classifiers/traffic/internal/gencap
CAP="$DIR/bench-$PACKETS.pcapng"
if [ ! -s "$CAP" ]; then
	"$DIR/gencap" -o "$CAP" -packets "$PACKETS" -seed 1
fi
cat "$CAP" >/dev/null # page cache

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $* }"; }
median() { # median of the values on stdin (lower middle for an even count)
	sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# measure OUT CMD...: runs CMD with stdout to OUT and prints "wall cpu" seconds (cpu =
# user+sys of the command and children).
measure() {
	local TIMEFORMAT='%R %U %S' t out=$1
	shift
	t=$({ time "$@" >"$out" 2>/dev/null; } 2>&1 | tail -1)
	awk -v t="$t" 'BEGIN { split(t, a, " "); printf "%.6f %.6f\n", a[1], a[2] + a[3] }'
}
ward_times=()
ward_cpus=()
base_cpus=()
for _ in $(seq "$RUNS"); do
	read -r w c < <(measure /dev/null env GOMAXPROCS=1 taskset -c "$CPU" "$DIR/ward-agent" analyze --pcap "$CAP" -o json)
	ward_times+=("$w")
	ward_cpus+=("$c")
	if [ -n "${WARD_BASELINE:-}" ]; then
		read -r _ c < <(measure /dev/null env GOMAXPROCS=1 taskset -c "$CPU" "$WARD_BASELINE" analyze --pcap "$CAP" -o json)
		base_cpus+=("$c")
	fi
done
GOMAXPROCS=1 taskset -c "$CPU" "$DIR/ward-agent" analyze --pcap "$CAP" -o json >"$DIR/ward.jsonl"
ward_s=$(printf '%s\n' "${ward_times[@]}" | median)
ward_cpu=$(printf '%s\n' "${ward_cpus[@]}" | median)
ward_pps=$(calc "$PACKETS / $ward_s")
ward_sni=$(grep -c '"sni":' "$DIR/ward.jsonl" || true)
ward_dns=$(grep '"type":"flow"' "$DIR/ward.jsonl" | grep -c '"dns_query":' || true)

if ! command -v tshark >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark >/dev/null
	fi
fi
tshark_s=""
tshark_cpus=()
if command -v tshark >/dev/null 2>&1; then
	tshark_times=()
	tshark_cpus=()
	for _ in $(seq "$TSHARK_RUNS"); do
		read -r w c < <(measure "$DIR/tshark.txt" taskset -c "$CPU" tshark -n -r "$CAP" -T fields -e tls.handshake.extensions_server_name -e dns.qry.name \
			-Y 'tls.handshake.type == 1 || dns.flags.response == 0')
		tshark_times+=("$w")
		tshark_cpus+=("$c")
	done
	tshark_cpu=$(printf '%s\n' "${tshark_cpus[@]}" | median)
	tshark_s=$(printf '%s\n' "${tshark_times[@]}" | median)
	tshark_pps=$(calc "$PACKETS / $tshark_s")
	tshark_sni=$(awk -F'\t' '$1 != ""' "$DIR/tshark.txt" | wc -l)
	tshark_dns=$(awk -F'\t' '$2 != ""' "$DIR/tshark.txt" | wc -l)
fi

printf '\n== ward network benchmark (%s packets, %s, %s)\n' "$PACKETS" "$(du -h "$CAP" | cut -f1)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf 'load average : %s before, %s after; median of %s ward and %s tshark runs\n' "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)" "$RUNS" "${#tshark_cpus[@]}"
printf 'ward cpu runs: %s\n' "${ward_cpus[*]}"
if [ ${#base_cpus[@]} -gt 0 ]; then
	base_cpu=$(printf '%s\n' "${base_cpus[@]}" | median)
	printf 'baseline     : %8.3f s cpu median (runs %s), %.0f packets/cpu-s; this build takes %.0f%% of its CPU time\n' \
		"$base_cpu" "${base_cpus[*]}" "$(calc "$PACKETS / $base_cpu")" "$(calc "100 * $ward_cpu / $base_cpu")"
fi
printf 'ward analyze : %8.3f s wall %8.3f s cpu  %10.0f packets/s (wall)  %10.0f packets/cpu-s  (SNI flows %s, DNS flows %s)\n' \
	"$ward_s" "$ward_cpu" "$ward_pps" "$(calc "$PACKETS / $ward_cpu")" "$ward_sni" "$ward_dns"
if [ -n "$tshark_s" ]; then
	printf 'tshark       : %8.3f s wall %8.3f s cpu  %10.0f packets/s (wall)  %10.0f packets/cpu-s  (SNI lines %s, DNS query lines %s)\n' \
		"$tshark_s" "$tshark_cpu" "$tshark_pps" "$(calc "$PACKETS / $tshark_cpu")" "$tshark_sni" "$tshark_dns"
	printf 'tshark cpu runs: %s\n' "${tshark_cpus[*]}"
	printf 'ratio        : %8.1fx wall  %8.1fx cpu\n' "$(calc "$tshark_s / $ward_s")" "$(calc "$tshark_cpu / $ward_cpu")"
	met() { awk "BEGIN { exit !($1) }" && echo met || echo "NOT met"; }
	printf 'aims         : >= 1M packets/cpu-s %s; >= 50x tshark (cpu) %s\n' \
		"$(met "$PACKETS / $ward_cpu >= 1000000")" "$(met "$tshark_cpu / $ward_cpu >= 50")"
	echo "ward_pps=$(printf %.0f "$ward_pps") ward_pps_cpu=$(printf %.0f "$(calc "$PACKETS / $ward_cpu")") tshark_pps=$(printf %.0f "$tshark_pps") ratio_wall=$(printf %.1f "$(calc "$tshark_s / $ward_s")") ratio_cpu=$(printf %.1f "$(calc "$tshark_cpu / $ward_cpu")")"
else
	echo "tshark unavailable: ratio not measured"
	echo "ward_pps=$(printf %.0f "$ward_pps")"
fi
