#!/usr/bin/env bash
# Ward classifier benchmarks: MB/s per core for clean clinical text, PHI-dense text, DOCX and
# PDF, and ripgrep (-j1) over the same bytes with the equivalent identifier/anchor regexes.
#
# Both sides are measured in CPU time (user+system): the machines this runs on are shared,
# and wall time measures the neighbours as much as the code. Each side runs RUNS times
# (default 5) and the median is printed, with the load average before and after.
# Usage: classifiers/bench.sh   (from the repository root; RUNS=9 BENCHTIME=5x to change)
set -euo pipefail
cd "$(dirname "$0")/.."
BENCHTIME=${BENCHTIME:-5x}
RUNS=${RUNS:-5}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

if ! command -v rg >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y ripgrep >/dev/null
  else
    echo "ripgrep missing: apt-get install ripgrep (as root)" >&2
  fi
fi

WARD_BENCH_WRITE="$dir" go test ./classifiers -run '^TestWriteBenchCorpus$' -count=1 >/dev/null
echo "corpus in $dir:"; ls -l "$dir" | awk 'NR>1{printf "  %-24s %10d bytes\n", $9, $5}'

median() { sort -g | awk '{v[NR]=$1} END{if(NR==0){print 0}else if(NR%2){print v[(NR+1)/2]}else{print (v[NR/2]+v[NR/2+1])/2}}'; }

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
go test -c -o "$dir/classifiers.test" ./classifiers
# cpuMB/s is reported by the benchmark itself (getrusage around the timed loop).
WARD_BENCH_DIR="$dir" "$dir/classifiers.test" -test.run '^$' -test.bench '^BenchmarkCorpus$' \
  -test.benchtime "$BENCHTIME" -test.cpu 1 -test.count "$RUNS" >"$dir/ward.txt"
declare -A ward
for name in clinical-clean.txt phi-dense.csv notes.docx notes.pdf; do
  ward[$name]=$(awk -v n="BenchmarkCorpus/$name" '$1==n{for(i=1;i<=NF;i++) if($(i+1)=="cpuMB/s") print $i}' "$dir/ward.txt" | median)
done

# Equivalent patterns: every identifier shape and anchor the default detectors look for.
pats=(
  -e '\b\d{3}[- ]\d{2}[- ]\d{4}\b' -e '\b\d{9,10}\b' -e '\b[A-Z]{2}\d{7}\b'
  -e '\b[1-9][A-Z][A-Z0-9]\d-?[A-Z][A-Z0-9]\d-?[A-Z]{2}\d{2}\b'
  -e '\(?\b\d{3}\)?[-. ]\d{3}[-. ]\d{4}\b' -e '[\w.+-]+@[\w-]+\.[\w.-]+'
  -e '\b\d{1,2}/\d{1,2}/\d{2,4}\b' -e '\b\d{4}-\d{2}-\d{2}\b'
  -e '\b(F1[0-689]|F55|R78|Z71)\.?[0-9A-Z]{0,4}\b' -e '\b[HGJSTMQ]\d{4}\b'
  -e 'hl7\.org|113883\.' -e '42\s*C\.?F\.?R' -e 'MSH\|'
  -e '(?i)\b(buprenorphine|methadone|methadose|dolophine|naltrexone|suboxone|subutex|sublocade|zubsolv|bunavail|brixadi|probuphine|vivitrol|lucemyra|lofexidine)\b'
)

rgcpu() { # file -> MB/s of rg -j1 CPU time (user+sys), median of RUNS
  local f=$1 n
  n=$(stat -c %s "$f")
  for _ in $(seq "$RUNS"); do
    if command -v perf >/dev/null && perf stat -x, -e task-clock -o "$dir/rg.stat" true 2>/dev/null; then
      # task-clock: CPU time in ms with sub-millisecond resolution.
      perf stat -x, -e task-clock -o "$dir/rg.stat" rg -j1 -c "${pats[@]}" "$f" >/dev/null || true
      awk -F, -v n="$n" '$3=="task-clock"{print n/1e6/($1/1000)}' "$dir/rg.stat"
    else
      /usr/bin/time -f '%U %S' -o "$dir/rg.time" rg -j1 -c "${pats[@]}" "$f" >/dev/null || true
      awk -v n="$n" '{s=$1+$2; if(s<0.001)s=0.001; print n/1e6/s}' "$dir/rg.time"
    fi
  done | median
}

printf '\n%-22s %14s %14s %8s\n' corpus "ward cpuMB/s" "rg cpuMB/s" "ward/rg"
for pair in "clinical-clean.txt:clinical-clean.txt" "phi-dense.csv:phi-dense.csv" "notes.docx:notes-docx-text.txt" "notes.pdf:notes-pdf-text.txt"; do
  name=${pair%%:*}; rgfile=${pair#*:}
  w=${ward[$name]:-0}
  r=0; command -v rg >/dev/null && r=$(rgcpu "$dir/$rgfile")
  printf '%-22s %14.0f %14.0f %8.2f\n' "$name" "$w" "$r" "$(awk -v w="$w" -v r="$r" 'BEGIN{print (r>0)?w/r:0}')"
done
echo "(medians of $RUNS runs; Ward: BenchmarkCorpus -cpu 1, CPU time of the process; rg -j1 -c with ${#pats[@]} args of patterns, CPU time of the process;"
echo " DOCX and PDF: MB/s of extracted text, extraction included; rg over the extracted text)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
