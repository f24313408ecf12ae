#!/usr/bin/env bash
# The schema compatibility gate: registers the schemas of a baseline commit (default: the parent
# commit, i.e. what was there before this change) in a scratch registry, then asks it whether
# the working tree's schemas may follow them. A breaking change fails the build.
#   HIXBUS_SCHEMA_BASELINE=<git ref>   compare against another commit (a release tag, say)
#   HIXBUS_BIN=<path>                  the hixbus binary to use
set -euo pipefail
cd "$(dirname "$0")/../.."

bin="${HIXBUS_BIN:-${CARGO_TARGET_DIR:-target}/debug/hixbus}"
baseline="${HIXBUS_SCHEMA_BASELINE:-HEAD~1}"
work="$(mktemp -d)"
trap 'kill "${registry_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

if ! git rev-parse --verify --quiet "$baseline^{commit}" >/dev/null ||
   ! git cat-file -e "$baseline:schemas/catalog.toml" 2>/dev/null; then
  echo "schema gate: no schemas at $baseline; nothing released to be compatible with"
  exit 0
fi
git archive "$baseline" schemas | tar -x -C "$work"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
HIXBUS_LOG=warn "$bin" registry serve --listen "127.0.0.1:$port" --database "sqlite://$work/gate.db" &
registry_pid=$!
for _ in $(seq 50); do
  curl -fsS "$url/health" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "schema gate: baseline $(git rev-parse --short "$baseline") -> working tree"
"$bin" schemas register --registry-url "$url" --dir "$work/schemas" >/dev/null
"$bin" schemas check --registry-url "$url" --dir schemas
