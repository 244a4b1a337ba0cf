#!/usr/bin/env bash
# Network benchmark for `ward-agent analyze`: packets per second on one core over a large
# synthetic capture (TLS with split post-quantum ClientHellos, QUIC v1 Initials, DNS, HTTP,
# STUN/RTP, bulk data; see internal/gencap), and tshark extracting the same fields (TLS/QUIC
# SNI and DNS query names) from the same file, as a ratio.
#
#   classifiers/traffic/bench.sh                 # 1,000,000 packets
#   PACKETS=3000000 RUNS=5 TSHARK_RUNS=1 classifiers/traffic/bench.sh
#   WARD_AGENT=bin/ward-agent ...   # measure an existing binary
#
# Both tools are pinned to one CPU with taskset (ward also with GOMAXPROCS=1) and read a
# file already in the page cache; the best of RUNS runs counts. Wall and CPU (user+sys)
# time are both reported: on a shared machine CPU time is the steadier per-core figure. Output: a summary block and
# the same numbers as key=value lines for scripts.
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
best() { # best (smallest) of the values on stdin
	sort -g | head -1
}

# measure CMD...: prints "wall cpu" seconds (cpu = user+sys of the command and children).
measure() {
	local TIMEFORMAT='%R %U %S' t
	t=$({ time "$@" >/dev/null 2>&1; } 2>&1 | tail -1)
	awk -v t="$t" 'BEGIN { split(t, a, " "); printf "%.6f %.6f\n", a[1], a[2] + a[3] }'
}
ward_times=()
ward_cpus=()
for _ in $(seq "$RUNS"); do
	read -r w c < <(measure env GOMAXPROCS=1 taskset -c "$CPU" "$DIR/ward-agent" analyze --pcap "$CAP" -o json)
	ward_times+=("$w")
	ward_cpus+=("$c")
done
GOMAXPROCS=1 taskset -c "$CPU" "$DIR/ward-agent" analyze --pcap "$CAP" -o json >"$DIR/ward.jsonl"
ward_s=$(printf '%s\n' "${ward_times[@]}" | best)
ward_cpu=$(printf '%s\n' "${ward_cpus[@]}" | best)
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
if command -v tshark >/dev/null 2>&1; then
	tshark_times=()
	tshark_cpus=()
	for _ in $(seq "$TSHARK_RUNS"); do
		read -r w c < <(measure taskset -c "$CPU" tshark -n -r "$CAP" -T fields -e tls.handshake.extensions_server_name -e dns.qry.name \
			-Y 'tls.handshake.type == 1 || dns.flags.response == 0')
		tshark_times+=("$w")
		tshark_cpus+=("$c")
		awk "BEGIN { exit !($w > 60) }" && break # one slow run is enough
	done
	taskset -c "$CPU" tshark -n -r "$CAP" -T fields -e tls.handshake.extensions_server_name -e dns.qry.name \
		-Y 'tls.handshake.type == 1 || dns.flags.response == 0' >"$DIR/tshark.txt" 2>"$DIR/tshark.err"
	tshark_cpu=$(printf '%s\n' "${tshark_cpus[@]}" | best)
	tshark_s=$(printf '%s\n' "${tshark_times[@]}" | best)
	tshark_pps=$(calc "$PACKETS / $tshark_s")
	tshark_sni=$(awk -F'\t' '$1 != ""' "$DIR/tshark.txt" | wc -l)
	tshark_dns=$(awk -F'\t' '$2 != ""' "$DIR/tshark.txt" | wc -l)
fi

printf '\n== ward network benchmark (%s packets, %s, %s)\n' "$PACKETS" "$(du -h "$CAP" | cut -f1)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf 'ward analyze : %8.3f s wall %8.3f s cpu  %10.0f packets/s (wall)  %10.0f packets/cpu-s  (SNI flows %s, DNS flows %s)\n' \
	"$ward_s" "$ward_cpu" "$ward_pps" "$(calc "$PACKETS / $ward_cpu")" "$ward_sni" "$ward_dns"
if [ -n "$tshark_s" ]; then
	printf 'tshark       : %8.3f s wall %8.3f s cpu  %10.0f packets/s (wall)  %10.0f packets/cpu-s  (SNI lines %s, DNS query lines %s)\n' \
		"$tshark_s" "$tshark_cpu" "$tshark_pps" "$(calc "$PACKETS / $tshark_cpu")" "$tshark_sni" "$tshark_dns"
	printf 'ratio        : %8.1fx wall  %8.1fx cpu\n' "$(calc "$tshark_s / $ward_s")" "$(calc "$tshark_cpu / $ward_cpu")"
	echo "ward_pps=$(printf %.0f "$ward_pps") ward_pps_cpu=$(printf %.0f "$(calc "$PACKETS / $ward_cpu")") tshark_pps=$(printf %.0f "$tshark_pps") ratio_wall=$(printf %.1f "$(calc "$tshark_s / $ward_s")") ratio_cpu=$(printf %.1f "$(calc "$tshark_cpu / $ward_cpu")")"
else
	echo "tshark unavailable: ratio not measured"
	echo "ward_pps=$(printf %.0f "$ward_pps")"
fi
