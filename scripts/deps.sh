#!/usr/bin/env bash
# Makes sure the tools a make target needs are here. As root on Debian/Ubuntu it installs
# what is missing with apt; otherwise it names exactly what to install and fails.
#   scripts/deps.sh build     Go only (binaries use committed generated code)
#   scripts/deps.sh generate  + clang, llvm-strip, libbpf headers, protoc
#   scripts/deps.sh test      + what the tests need (generate's set,
#                             debootstrap and rpm for the package tests, rsyslog for the
#                             syslog sink test, dosfstools and fusefat for the USB-stick
#                             image of the file-egress tests, chromium for the console's
#                             browser tests, postgresql for the scale-out test and the
#                             PostgreSQL store tests; its binaries stay off PATH)
#   scripts/deps.sh package   rpm, to inspect built packages (nfpm itself is a Go tool)
set -euo pipefail
want=${1:-build}

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "deps: Go is not installed or not on PATH (need Go 1.26 or later: https://go.dev/dl/)" >&2
    exit 1
  fi
  local v; v=$(go env GOVERSION | sed 's/^go//')
  local major=${v%%.*} rest=${v#*.}; local minor=${rest%%.*}
  if [ "$major" -lt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -lt 26 ]; }; then
    echo "deps: Go $v is too old; Ward needs Go 1.26 or later" >&2
    exit 1
  fi
}

# pkg:probe pairs; probe is a command, a file path for header-only packages, or "dpkg" for
# packages that ship neither (plugins), asked of dpkg itself.
pkgs=()
case "$want" in
  build) ;;
  generate) pkgs=(clang:clang llvm:llvm-strip libbpf-dev:/usr/include/bpf/bpf_helpers.h protobuf-compiler:protoc) ;;
  test) pkgs=(clang:clang llvm:llvm-strip libbpf-dev:/usr/include/bpf/bpf_helpers.h protobuf-compiler:protoc git:git debootstrap:debootstrap rpm:rpm rsyslog:rsyslogd rsyslog-gnutls:dpkg dosfstools:mkfs.vfat fusefat:fusefat chromium:chromium curl:curl gnutls-bin:gnutls-cli libnss3-tools:tstclnt libssl-dev:/usr/include/openssl/ssl.h postgresql:dpkg) ;;
  package) pkgs=(rpm:rpm) ;;
  *) echo "deps: unknown set $want" >&2; exit 2 ;;
esac
need_go

missing=()
for p in "${pkgs[@]}"; do
  name=${p%%:*} probe=${p#*:}
  if [[ $probe == dpkg ]]; then
    dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q 'install ok installed' || missing+=("$name")
  elif [[ $probe == /* ]]; then [ -e "$probe" ] || missing+=("$name")
  else command -v "$probe" >/dev/null 2>&1 || missing+=("$name"); fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "deps: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi
echo "deps: missing Debian packages: ${missing[*]}" >&2
echo "deps: install them with: sudo apt-get install ${missing[*]}" >&2
exit 1
