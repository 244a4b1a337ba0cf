#!/usr/bin/env bash
# Ward classifier benchmarks: MB/s per core for clean clinical text, PHI-dense text, DOCX and
# PDF, and ripgrep (-j1) over the same bytes with the equivalent identifier/anchor regexes.
# Usage: classifiers/bench.sh   (from the repository root; BENCHTIME=5x to change)
set -euo pipefail
cd "$(dirname "$0")/.."
BENCHTIME=${BENCHTIME:-5x}
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

declare -A ward
while read -r name mbs; do ward[$name]=$mbs; done < <(
  WARD_BENCH_DIR="$dir" go test ./classifiers -run '^$' -bench '^BenchmarkCorpus$' -benchtime "$BENCHTIME" -cpu 1 -count=1 |
    awk '/^BenchmarkCorpus\//{split($1,a,"/"); for(i=1;i<=NF;i++) if($(i+1)=="MB/s") print a[2], $i}')

# Equivalent patterns: every identifier shape and anchor the default detectors look for.
pats=(
  -e '\b\d{3}[- ]\d{2}[- ]\d{4}\b' -e '\b\d{9,10}\b' -e '\b[A-Z]{2}\d{7}\b'
  -e '\b[1-9][A-Z][A-Z0-9]\d-?[A-Z][A-Z0-9]\d-?[A-Z]{2}\d{2}\b'
  -e '\(?\b\d{3}\)?[-. ]\d{3}[-. ]\d{4}\b' -e '[\w.+-]+@[\w-]+\.[\w.-]+'
  -e '\b\d{1,2}/\d{1,2}/\d{2,4}\b' -e '\b\d{4}-\d{2}-\d{2}\b'
  -e '\b(F1[0-689]|F55|R78|Z71)\.?[0-9A-Z]{0,4}\b' -e '\b[HGJSTMQ]\d{4}\b'
  -e 'hl7\.org|113883\.' -e '42\s*C\.?F\.?R' -e 'MSH\|'
)

rgmbs() { # file -> MB/s of rg -j1 (best of 3)
  local f=$1 best=0
  for _ in 1 2 3; do
    local s e
    s=$(date +%s%N); rg -j1 -c "${pats[@]}" "$f" >/dev/null || true; e=$(date +%s%N)
    best=$(awk -v b="$best" -v n="$(stat -c %s "$f")" -v ns=$((e - s)) 'BEGIN{m=n/1e6/(ns/1e9); print (m>b)?m:b}')
  done
  echo "$best"
}

printf '\n%-22s %12s %12s %8s\n' corpus "ward MB/s" "rg MB/s" "ward/rg"
echo "load before timing: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
for pair in "clinical-clean.txt:clinical-clean.txt" "phi-dense.csv:phi-dense.csv" "notes.docx:notes-docx-text.txt" "notes.pdf:notes-pdf-text.txt"; do
  name=${pair%%:*}; rgfile=${pair#*:}
  w=${ward[$name]:-0}
  r=0; command -v rg >/dev/null && r=$(rgmbs "$dir/$rgfile")
  printf '%-22s %12.0f %12.0f %8.2f\n' "$name" "$w" "$r" "$(awk -v w="$w" -v r="$r" 'BEGIN{print (r>0)?w/r:0}')"
done
echo "(rg -j1 -c with ${#pats[@]} args of patterns; Go benchmarks with -cpu 1; DOCX and PDF: MB/s of extracted text, extraction included; rg over the extracted text)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
