#!/usr/bin/env bash
# Builds the ward-agent and ward-collector .deb and .rpm packages with nfpm, which runs as
# a Go tool (`go tool nfpm`, pinned in go.mod): no network at build time once modules are
# downloaded. Reproducible: binaries are built with -trimpath and every timestamp in the
# packages is SOURCE_DATE_EPOCH (default: the last commit's time).
#
#   packaging/build.sh                 packages into dist/ for this machine's architecture
#   VERSION=1.2.3 OUT=/tmp/p GOARCH=arm64 packaging/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
OUT=${OUT:-dist}
GOARCH=${GOARCH:-$($GO env GOARCH)}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

# Package versions must start with a digit and sort upgrades correctly: a tag v1.2.3 gives
# 1.2.3 (1.2.3+4.gHASH four commits later), an untagged tree 0.0.0~git<count>.<hash>.
pkg_version() {
  local d
  if d=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
    d=${d#v}
    echo "$d" | sed -E 's/-([0-9]+)-g([0-9a-f]+)$/+\1.g\2/'
  elif git rev-parse --verify -q HEAD >/dev/null 2>&1; then
    echo "0.0.0~git$(git rev-list --count HEAD).$(git rev-parse --short HEAD)"
  else
    echo "0.0.0~dev"
  fi
}
VERSION=${VERSION:-$(pkg_version)}
VERSION=${VERSION#v}
if ! [[ $VERSION =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
  echo "package: version '$VERSION' must start with a digit and use only [A-Za-z0-9.+~]" >&2
  exit 1
fi

case "$GOARCH" in
  amd64|arm64) ;;
  *) echo "package: GOARCH $GOARCH is not packaged (amd64, arm64)" >&2; exit 1 ;;
esac

mkdir -p "$OUT"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
echo "package: building binaries $VERSION for linux/$GOARCH" >&2
CGO_ENABLED=0 GOOS=linux GOARCH=$GOARCH $GO build -trimpath -buildvcs=false \
  -ldflags "-s -w -buildid= -X main.version=$VERSION" -o "$bin/" ./cmd/ward-agent ./cmd/ward-collector ./cmd/wardctl

export WARD_VERSION=$VERSION WARD_ARCH=$GOARCH WARD_BIN=$bin
for pkg in agent collector; do
  for fmt in deb rpm; do
    $GO tool nfpm package --config "packaging/nfpm-$pkg.yaml" --packager "$fmt" --target "$OUT/" >&2
  done
done
(cd "$OUT" && sha256sum ward-*"${VERSION}"*.deb ward-*"${VERSION}"*.rpm > "SHA256SUMS-$VERSION-$GOARCH")
ls -1 "$OUT" | grep -F -- "$VERSION" >&2
