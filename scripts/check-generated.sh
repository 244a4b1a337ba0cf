#!/usr/bin/env bash
# Regenerates bpf2go objects and protobuf Go and fails if that changed anything: generated
# code is committed so builds need neither clang nor protoc, and CI proves it is current.
set -euo pipefail
snapshot() { { git status --porcelain -- api bpf; git diff -- api bpf; } | sha256sum; }
before=$(snapshot)
make --no-print-directory generate >/dev/null
after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "generated code is stale: run 'make generate' and commit the result:" >&2
  git status --porcelain -- api bpf >&2
  exit 1
fi
echo "generated code is fresh"
