#!/usr/bin/env bash
# The real Kafka-protocol broker for tests, benchmarks and local runs: Tansu, from crates.io.
#
#   infra/broker/tansu.sh install          install the pinned version once into ~/.cargo/bin
#                                          (about 16 minutes of build the first time; skipped
#                                          when that version is already there)
#   infra/broker/tansu.sh start [ENGINE]   start a broker on a free port and print
#                                          `export HIXBUS_TEST_BOOTSTRAP_SERVERS=… TANSU_PID=…`
#                                          ENGINE: memory (default) or sqlite (durable, in the
#                                          state directory)
#   infra/broker/tansu.sh stop PID         stop a broker started by `start`
#
# Versions and features: ../shared/docs/broker-notes.md. `--locked` matters: newer dependency
# versions break the build. No Kafka transactions: hixbus never depends on them.
set -euo pipefail

TANSU_VERSION=0.6.0
TANSU_FEATURES=dynostore,libsql
state="${HIXBUS_BROKER_STATE:-$HOME/.cache/hixbus/broker}"

tansu_bin() {
  if command -v tansu >/dev/null 2>&1; then command -v tansu; else echo "$HOME/.cargo/bin/tansu"; fi
}

install() {
  local bin
  bin="$(tansu_bin)"
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qx "tansu $TANSU_VERSION"; then
    echo "tansu $TANSU_VERSION already installed at $bin" >&2
    return
  fi
  echo "installing tansu $TANSU_VERSION (features $TANSU_FEATURES); this takes a while once" >&2
  cargo install tansu --version "$TANSU_VERSION" --locked --features "$TANSU_FEATURES" >&2
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  local engine="${1:-memory}" port dir storage bin
  bin="$(tansu_bin)"
  [ -x "$bin" ] || { echo "tansu is not installed: run $0 install" >&2; exit 1; }
  port="$(free_port)"
  dir="$state/$port"
  mkdir -p "$dir"
  case "$engine" in
    memory) storage="memory://tansu/" ;;
    sqlite) storage="sqlite://broker.db" ;;
    *) echo "unknown engine $engine (memory or sqlite)" >&2; exit 2 ;;
  esac
  # Tansu would also read OTEL_EXPORTER_OTLP_ENDPOINT; the test broker exports nothing.
  (cd "$dir" && exec env -u OTEL_EXPORTER_OTLP_ENDPOINT "$bin" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "$storage" >"$dir/broker.log" 2>&1) &
  local pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "export HIXBUS_TEST_BOOTSTRAP_SERVERS=127.0.0.1:$port TANSU_PID=$pid"
      echo "tansu $engine broker on 127.0.0.1:$port (pid $pid, log $dir/broker.log)" >&2
      return
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "tansu did not start; log:" >&2
  cat "$dir/broker.log" >&2 || true
  exit 1
}

stop() {
  local pid="${1:?usage: $0 stop PID}"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

case "${1:-}" in
  install) install ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
