#!/usr/bin/env bash
# Checks the monitoring that ships in infra/: the alerting rules (`promtool check rules` and their
# unit tests), the Prometheus configuration docker-compose.yml mounts, and that the Grafana
# dashboard is valid JSON whose panels all query the provisioned Prometheus. That every metric
# the rules and the dashboard name exists is asserted by the integration test that scrapes the
# services (tests/it/operations.rs).
# promtool comes from Debian's `prometheus` package, unpacked into ~/.cache/hixbus (not
# installed: the package would also start a Prometheus server).
set -euo pipefail
cd "$(dirname "$0")/../.."
cache="$HOME/.cache/hixbus/promtool"
promtool="$cache/usr/bin/promtool"
if [ ! -x "$promtool" ]; then
  mkdir -p "$cache"
  download="$(mktemp -d)"
  (cd "$download" && apt-get download prometheus >/dev/null 2>&1) || {
    apt-get update -qq >/dev/null && (cd "$download" && apt-get download prometheus >/dev/null)
  }
  dpkg-deb -x "$download"/prometheus_*.deb "$cache"
  rm -rf "$download"
fi
"$promtool" --version | head -1

"$promtool" check rules infra/prometheus/alerts.yml
(cd infra/prometheus && "$promtool" test rules alerts.test.yml)

# The configuration names the rules where the container mounts them.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp infra/prometheus/alerts.yml "$work/alerts.yml"
sed "s|/etc/prometheus/alerts.yml|$work/alerts.yml|" infra/prometheus/prometheus.yml > "$work/prometheus.yml"
"$promtool" check config "$work/prometheus.yml"

python3 - <<'PY'
import json, sys
dashboard = json.load(open("infra/grafana/dashboards/hixbus.json"))
problems = []
queries = 0
for panel in dashboard["panels"]:
    if panel["type"] == "row":
        continue
    if panel.get("datasource", {}).get("uid") != "${datasource}":
        problems.append(f"panel {panel['title']!r} does not use the dashboard's datasource")
    for target in panel.get("targets", []):
        queries += 1
        if not target.get("expr", "").strip():
            problems.append(f"panel {panel['title']!r} has an empty query")
if problems:
    sys.exit("\n".join(problems))
panels = sum(1 for p in dashboard["panels"] if p["type"] != "row")
print(f"dashboard: {panels} panels, {queries} queries")
PY
