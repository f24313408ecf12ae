#!/usr/bin/env bash
# Validates docker-compose.yml against the Compose specification schema and the hixbus binary
# (no Docker engine needed). The schema is the compose_spec.json that ships in the docker-compose
# 1.29.2 wheel on PyPI, fetched once into ~/.cache/hixbus (not vendored).
#   usage: HIXBUS_BIN=path/to/hixbus infra/ci/compose-check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cache="$HOME/.cache/hixbus/compose-spec"
python="${HIXBUS_PYTHON:-$HOME/.cache/hixbus/venv/bin/python}"
schema="$cache/compose_spec.json"
if [ ! -s "$schema" ]; then
  mkdir -p "$cache"
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --dest "$cache" docker-compose==1.29.2
  "$python" - "$cache" <<'PY'
import glob, sys, zipfile
cache = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{cache}/docker_compose-1.29.2-*.whl")[0])
open(f"{cache}/compose_spec.json", "wb").write(wheel.read("compose/config/compose_spec.json"))
PY
fi
"$python" infra/ci/compose-check.py docker-compose.yml "$schema" "${HIXBUS_BIN:?set HIXBUS_BIN}"
