#!/usr/bin/env bash
# `hixbus up` as a new user runs it: the embedded stack starts, `hixbus tail` in another
# process sees demo events flowing, the README's prescription commands work with the keys it
# printed, Ctrl-C stops it cleanly.
# With the hostile binary it then sends the hostile corpus (every endpoint, every refusal) for
# a number of rounds and checks the peak memory of `hixbus up` stays under 300 MB.
#   usage: tests/smoke/up.sh PATH/TO/hixbus [PATH/TO/hostile [ROUNDS]]
set -euo pipefail
bin="${1:?usage: $0 PATH/TO/hixbus [PATH/TO/hostile [ROUNDS]]}"
hostile="${2:-}"
rounds="${3:-20}"
work="$(mktemp -d)"
trap 'kill "$up" 2>/dev/null || true; rm -rf "$work"' EXIT

# A server that stops answering fails the smoke test instead of hanging it.
curl() { command curl --max-time 10 "$@"; }
# Listen ports come from below the kernel's ephemeral range: a port bound to 0 and let go comes
# from that range, and `hixbus up`'s own outgoing connections (to the broker, the registry) draw
# from it too, so one of them could take a listen port before its service binds it (CI saw that
# once). Each port is checked free, and all fifteen differ.
names=(kafka registry gateway pharmacy safety lab feed claims insurer patient research ops web oidc mllp)
ports=($(python3 - "${#names[@]}" <<'PY'
import random, socket, sys
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
chosen = []
while len(chosen) < int(sys.argv[1]):
    p = random.randrange(10000, low)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    if p not in chosen:
        chosen.append(p)
print(*chosen)
PY
))
for i in "${!names[@]}"; do printf -v "${names[$i]}" '127.0.0.1:%s' "${ports[$i]}"; done

started=$(date +%s.%N)
"$bin" up --kafka-listen "$kafka" --registry-listen "$registry" --demo-interval-ms 50 \
  --listen "clinic-gateway=$gateway" --listen "pharmacy=$pharmacy" --listen "medication-safety=$safety" --listen "lab-gateway=$lab" --listen "insurer-feed=$feed" --listen "claims=$claims" --listen "insurer=$insurer" --listen "patient=$patient" --listen "research=$research" --listen "ops=$ops" --listen "web=$web" --oidc-listen "$oidc" --mllp-listen "$mllp" \
  >"$work/up.out" 2>"$work/up.err" &
up=$!
# Ready in well under a second usually; the medication-safety rebuild can take a few seconds
# on a busy machine, so up to 30 s is allowed (the time is reported below).
for _ in $(seq 1 600); do
  grep -q "Ctrl-C stops everything" "$work/up.out" 2>/dev/null && break
  kill -0 "$up" 2>/dev/null || { cat "$work/up.out" "$work/up.err"; echo "hixbus up exited" >&2; exit 1; }
  sleep 0.05
done
grep -q "Ctrl-C stops everything" "$work/up.out" || { cat "$work/up.out" "$work/up.err"; echo "hixbus up not ready in 30 s" >&2; exit 1; }
ready=$(python3 -c "import time; print(f'{time.time() - $started:.2f}')")
grep -q "IN-MEMORY, DEV ONLY" "$work/up.out" || { echo "dev mode is not labelled" >&2; exit 1; }

HIXBUS_OPERATOR=smoke-test HIXBUS_AUDIT_DATABASE="sqlite://$work/operator-audit.db" \
timeout 60 "$bin" tail prescriptions --from-beginning --max-records 3 \
  --bootstrap-servers "$kafka" --registry-url "http://$registry" >"$work/tail.out" 2>"$work/tail.err" \
  || { cat "$work/tail.err"; echo "hixbus tail failed" >&2; exit 1; }
lines=$(wc -l <"$work/tail.out")
[ "$lines" -eq 3 ] || { cat "$work/tail.out" "$work/tail.err"; echo "expected 3 events, got $lines" >&2; exit 1; }
python3 - "$work/tail.out" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    record = json.loads(line)
    assert record["topic"] == "prescriptions", record
    assert record["event"]["event_type"].startswith("Prescription"), record
    assert record["key"] == record["event"]["envelope"]["patient_ref"], record
    assert "traceparent" in record["headers"], record
PY
# Every record tail printed was audited first, under the operator's name, with its patient.
python3 - "$work/tail.out" "$work/operator-audit.db" <<'PY'
import json, sqlite3, sys
printed = [json.loads(line) for line in open(sys.argv[1])]
rows = sqlite3.connect(sys.argv[2]).execute(
    "SELECT org_id, action, subject_id, patient_ref FROM audit_log").fetchall()
expected = {("operator:smoke-test", "tail.read", f"{r['topic']}/{r['partition']}/{r['offset']}", r["key"])
            for r in printed}
assert set(rows) == expected, (rows, expected)
PY

# The README's prescription flow, with the keys `up` printed.
eval "$(grep -o 'export [A-Z]*_KEY=hxb_[0-9a-f]*' "$work/up.out")"
"$bin" demo fhir-bundle >"$work/rx.json"
accepted=$(curl -sf -X POST "http://$gateway/fhir/Bundle?target_pharmacy=pharmacy-aozora" \
  -H "Authorization: Bearer $SAKURA_KEY" -H 'Content-Type: application/fhir+json' --data @"$work/rx.json")
id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["prescription_id"])' "$accepted")
for _ in $(seq 1 100); do
  curl -sf "http://$pharmacy/pharmacy/inbox" -H "Authorization: Bearer $AOZORA_KEY" | grep -q "$id" && break
  sleep 0.1
done
curl -sf "http://$pharmacy/pharmacy/inbox" -H "Authorization: Bearer $AOZORA_KEY" | grep -q "$id" \
  || { echo "prescription $id never reached the pharmacy inbox" >&2; exit 1; }
curl -sf -X POST "http://$pharmacy/pharmacy/prescriptions/$id/dispense" -H "Authorization: Bearer $AOZORA_KEY" \
  -H 'Content-Type: application/json' \
  -d '{"pharmacist":{"id":"ph-1","name":"薬剤 花子","department":null}}' >/dev/null \
  || { echo "dispensing $id failed" >&2; exit 1; }
for _ in $(seq 1 100); do
  curl -sf "http://$gateway/clinic/prescriptions/$id" -H "Authorization: Bearer $SAKURA_KEY" | grep -q '"status":"dispensed"' && break
  sleep 0.1
done
curl -sf "http://$gateway/clinic/prescriptions/$id" -H "Authorization: Bearer $SAKURA_KEY" | grep -q '"status":"dispensed"' \
  || { echo "the clinic never saw $id dispensed" >&2; exit 1; }
# The dispensing was billed without anyone typing it, and the demo insurer decided it.
for _ in $(seq 1 150); do
  curl -sf "http://$claims/claims/dispensing:$id" -H "Authorization: Bearer $AOZORA_KEY" | grep -q '"status":"accepted"' && break
  sleep 0.1
done
curl -sf "http://$claims/claims/dispensing:$id" -H "Authorization: Bearer $AOZORA_KEY" | grep -q '"status":"accepted"' \
  || { curl -s "http://$claims/claims/dispensing:$id" -H "Authorization: Bearer $AOZORA_KEY"; echo "the dispensing of $id was not billed and accepted" >&2; exit 1; }

# The consoles, as the banner says: sign in with the pharmacy's key (the form's CSRF token
# from the sign-in page, the session in a cookie) and see the prescription and its claim.
grep -q "Consoles          http://$web" "$work/up.out" || { echo "the banner does not show the consoles" >&2; exit 1; }
jar="$work/cookies"
csrf=$(curl -sf -c "$jar" "http://$web/signin" | grep -o 'name="csrf" value="[^"]*"' | head -1 | sed 's/.*value="//; s/"$//')
[ -n "$csrf" ] || { echo "the sign-in page has no CSRF token" >&2; exit 1; }
curl -sf -b "$jar" -c "$jar" -o /dev/null --data-urlencode "csrf=$csrf" --data-urlencode "api_key=$AOZORA_KEY" "http://$web/signin" \
  || { echo "console sign-in failed" >&2; exit 1; }
curl -sf -b "$jar" "http://$web/pharmacy" | grep -q "$id" || { echo "the pharmacy console does not show $id" >&2; exit 1; }
curl -sf -b "$jar" "http://$web/pharmacy/rx/$id" | grep -q 'data-outcome="accepted"' \
  || { echo "the pharmacy console does not show the accepted claim of $id" >&2; exit 1; }
# The insurer named in the prescription's Coverage sees the claim and its decision.
jar2="$work/cookies-insurer"
csrf=$(curl -sf -c "$jar2" "http://$web/signin" | grep -o 'name="csrf" value="[^"]*"' | head -1 | sed 's/.*value="//; s/"$//')
curl -sf -b "$jar2" -c "$jar2" -o /dev/null --data-urlencode "csrf=$csrf" --data-urlencode "api_key=$KENPO_KEY" "http://$web/signin" \
  || { echo "the insurer's console sign-in failed" >&2; exit 1; }
curl -sf -b "$jar2" "http://$web/insurer" | grep -q "dispensing:$id" \
  || { echo "the insurer console does not show the claim of $id" >&2; exit 1; }
# The operator's console shows the exchange at work: the services ready, the prescriptions topic
# and the pharmacy's consumer group (the API looks every 10 s; the first look is at its start).
jar4="$work/cookies-operator"
csrf=$(curl -sf -c "$jar4" "http://$web/signin" | grep -o 'name="csrf" value="[^"]*"' | head -1 | sed 's/.*value="//; s/"$//')
curl -sf -b "$jar4" -c "$jar4" -o /dev/null --data-urlencode "csrf=$csrf" --data-urlencode "api_key=$OPERATOR_KEY" "http://$web/signin" \
  || { echo "the operator's console sign-in failed" >&2; exit 1; }
for _ in $(seq 1 30); do
  overview=$(curl -sf -b "$jar4" "http://$web/operator") || { echo "the operator console did not answer" >&2; exit 1; }
  grep -q "data-id=\"hixbus-pharmacy\"" <<<"$overview" && break
  sleep 1
done
grep -q 'data-id="prescriptions"' <<<"$overview" && grep -q 'data-id="hixbus-pharmacy"' <<<"$overview" \
  && grep -q 'data-id="pharmacy" data-status="true"' <<<"$overview" \
  || { echo "the operator console does not show the topics, the pharmacy's group and its health" >&2; exit 1; }
# A patient signs in at the demo provider (the code flow, redirects followed by hand) and sees
# their record, with this prescription in it.
jar3="$work/cookies-patient"
authorize=$(curl -s -c "$jar3" -o /dev/null -w '%{redirect_url}' "http://$web/patient/signin")
case "$authorize" in "http://$oidc/authorize?"*) ;; *) echo "the portal did not send the browser to the provider: $authorize" >&2; exit 1 ;; esac
callback=$(curl -s -o /dev/null -w '%{redirect_url}' --data "${authorize#*\?}&subject=demo-taro" "http://$oidc/authorize")
landed=$(curl -s -b "$jar3" -c "$jar3" -o /dev/null -w '%{redirect_url}' "$callback")
[ "$landed" = "http://$web/me" ] || { echo "the patient sign-in did not land on /me: $landed" >&2; exit 1; }
curl -sf -b "$jar3" "http://$web/me" | grep -q 'id="timeline"' \
  || { echo "the patient portal does not show the record" >&2; exit 1; }

# The patient signs in with the token up printed and sees the prescription, its dispensing and
# its claim in their own record; without the token, nothing.
eval "$(grep -o 'export PATIENT_TARO=[A-Za-z0-9._-]*' "$work/up.out")"
for _ in $(seq 1 150); do
  curl -sf "http://$patient/patient/timeline" -H "Authorization: Bearer $PATIENT_TARO" | grep -q "\"claim_id\":\"dispensing:$id\"" && break
  sleep 0.1
done
timeline=$(curl -sf "http://$patient/patient/timeline" -H "Authorization: Bearer $PATIENT_TARO") \
  || { echo "the demo patient could not read their timeline" >&2; exit 1; }
for needle in "\"kind\":\"prescription\"" "\"kind\":\"dispensing\"" "\"claim_id\":\"dispensing:$id\""; do
  echo "$timeline" | grep -q "$needle" || { echo "$timeline"; echo "the patient's timeline lacks $needle" >&2; exit 1; }
done
status=$(curl -s -o /dev/null -w '%{http_code}' "http://$patient/patient/timeline")
[ "$status" = 401 ] || { echo "the timeline without a sign-in answered $status, not 401" >&2; exit 1; }

# Every service answers its health and readiness probes.
for svc in "$gateway" "$pharmacy" "$safety" "$lab" "$feed" "$claims" "$insurer" "$patient" "$research" "$ops"; do
  curl -sf "http://$svc/ready" | grep -q '"status":"ready"' || { echo "$svc is not ready" >&2; exit 1; }
done

# Every service, and the registry, serves Prometheus metrics; the flow above shows in them.
for svc in "$gateway" "$pharmacy" "$safety" "$lab" "$feed" "$claims" "$insurer" "$patient" "$research" "$registry"; do
  metrics=$(curl -sf "http://$svc/metrics") || { echo "$svc has no /metrics" >&2; exit 1; }
  [ "$(tail -1 <<<"$metrics")" = "# EOF" ] || { echo "$svc/metrics is cut short" >&2; exit 1; }
done
grep -q '^hixbus_bus_delivery_latency_seconds_count{.*group="hixbus-pharmacy"' <<<"$metrics" \
  || { echo "/metrics does not show the pharmacy's deliveries" >&2; exit 1; }

# The demo research project receives a release of the demo clinic's events, k-anonymous.
for _ in $(seq 1 600); do
  curl -sf "http://$research/research/releases" -H "Authorization: Bearer $RESEARCH_KEY" | grep -q '"outcome":"RELEASED"' && break
  sleep 0.1
done
curl -sf "http://$research/research/releases" -H "Authorization: Bearer $RESEARCH_KEY" | python3 -c '
import json, sys
answer = json.load(sys.stdin)
project = answer["projects"][0]
assert project["project"] == "demo-lab-trends", answer
released = [r for r in project["releases"] if r["outcome"] == "RELEASED"]
assert released, answer
assert all(r["k_achieved"] >= r["k_required"] for r in released), released
' || { echo "the demo research project received no k-anonymous release" >&2; exit 1; }
status=$(curl -s -o /dev/null -w '%{http_code}' "http://$research/research/releases" -H "Authorization: Bearer $AOZORA_KEY")
[ "$status" = 403 ] || { echo "a pharmacy read research releases: $status" >&2; exit 1; }

# The README's lab result: the SS-MIX2 example, answered AA once published.
"$bin" demo hl7-lab >"$work/lab.hl7"
curl -sf -X POST "http://$lab/hl7v2" -H "Authorization: Bearer $KENSA_KEY" \
  -H 'Content-Type: application/hl7-v2' --data-binary @"$work/lab.hl7" | tr '\r' '\n' | grep -q '^MSA|AA|' \
  || { echo "the lab gateway did not accept the demo lab message" >&2; exit 1; }
# And over MLLP, framed, as lab systems send it.
"$bin" demo hl7-lab >"$work/lab2.hl7"
python3 - "$mllp" "$work/lab2.hl7" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
message = open(sys.argv[2], "rb").read()
with socket.create_connection((host, int(port)), timeout=10) as s:
    s.sendall(b"\x0b" + message + b"\x1c\x0d")
    answer = b""
    while not answer.endswith(b"\x1c\x0d"):
        chunk = s.recv(4096)
        assert chunk, "the MLLP connection closed without an ACK"
        answer += chunk
assert b"\rMSA|AA|" in answer, answer
PY
# The ordering hospital sees the demo lab's results in its inbox.
for _ in $(seq 1 100); do
  curl -sf "http://$gateway/clinic/results" -H "Authorization: Bearer $DAIICHI_KEY" | grep -q '"report":"lab-kensa/' && break
  sleep 0.1
done
curl -sf "http://$gateway/clinic/results" -H "Authorization: Bearer $DAIICHI_KEY" | grep -q '"report":"lab-kensa/' \
  || { echo "the demo hospital's results inbox stayed empty" >&2; exit 1; }

# The README's FHIR result reaches the institution it names (hospital-minato).
curl -sf -X POST "http://$lab/fhir/Observation" -H "Authorization: Bearer $KENSA_KEY" \
  -H 'Content-Type: application/fhir+json' \
  --data @"$(dirname "$0")/../fixtures/fhir/jp-clins-lab/Observation-Example-JP-Obs-LabResult-eCS-K.json" \
  | grep -q '"ordering":{"org_id":"hospital-minato"' \
  || { echo "the README's FHIR result named no demo institution" >&2; exit 1; }
for _ in $(seq 1 100); do
  curl -sf "http://$gateway/clinic/results" -H "Authorization: Bearer $MINATO_KEY" | grep -q '"report":"lab-kensa/' && break
  sleep 0.1
done
curl -sf "http://$gateway/clinic/results" -H "Authorization: Bearer $MINATO_KEY" | grep -q '"report":"lab-kensa/' \
  || { echo "hospital-minato's inbox stayed empty" >&2; exit 1; }

# The README's checkup: the 特定健診 example reaches its insurer, and only that insurer.
"$bin" demo checkup >"$work/checkup.json"
checkup=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["identifier"]["value"])' "$work/checkup.json")
curl -sf -X POST "http://$lab/fhir/Bundle" -H "Authorization: Bearer $DAIICHI_KEY" \
  -H 'Content-Type: application/fhir+json' --data @"$work/checkup.json" | grep -q '"insurer":{"org_id":"insurer-kenpo"' \
  || { echo "the lab gateway did not take the demo checkup for insurer-kenpo" >&2; exit 1; }
for _ in $(seq 1 100); do
  curl -sf "http://$feed/insurer/feed?limit=500" -H "Authorization: Bearer $KENPO_KEY" | grep -q "\"checkup_id\":\"$checkup\"" && break
  sleep 0.1
done
curl -sf "http://$feed/insurer/feed?limit=500" -H "Authorization: Bearer $KENPO_KEY" | grep -q "\"checkup_id\":\"$checkup\"" \
  || { echo "insurer-kenpo's feed never showed checkup $checkup" >&2; exit 1; }
if curl -sf "http://$feed/insurer/feed?limit=500" -H "Authorization: Bearer $KOKUHO_KEY" | grep -q "$checkup"; then
  echo "another insurer saw checkup $checkup" >&2; exit 1
fi

# The dev registry takes changes from the operator only, as production does.
status=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "http://$registry/config" \
  -H 'Content-Type: application/vnd.schemaregistry.v1+json' -d '{"compatibility":"NONE"}')
[ "$status" = 401 ] || { echo "the dev registry let an anonymous caller change it ($status)" >&2; exit 1; }
status=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "http://$registry/config" -u "hixbus-operator:$OPERATOR_KEY" \
  -H 'Content-Type: application/vnd.schemaregistry.v1+json' -d '{"compatibility":"FULL_TRANSITIVE"}')
[ "$status" = 200 ] || { echo "the operator could not change the dev registry ($status)" >&2; exit 1; }

hostile_summary=""
if [ -n "$hostile" ]; then
  "$hostile" "http://$gateway" "http://$pharmacy" "http://$registry" "$rounds" >"$work/hostile.out" 2>"$work/hostile.err" \
    || { cat "$work/hostile.out" "$work/hostile.err"; echo "hostile corpus: unexpected answers" >&2; exit 1; }
  curl -sf "http://$gateway/health" >/dev/null || { echo "the gateway stopped answering" >&2; exit 1; }
  curl -sf "http://$pharmacy/health" >/dev/null || { echo "the pharmacy stopped answering" >&2; exit 1; }
  peak_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$up/status")
  peak_mib=$((peak_kib / 1024))
  [ "$peak_mib" -lt 300 ] || { echo "hixbus up peaked at ${peak_mib} MiB under the hostile corpus (bound: 300)" >&2; exit 1; }
  hostile_summary=", hostile corpus $(cat "$work/hostile.out") with peak RSS ${peak_mib} MiB"
  if [ -n "${HIXBUS_SUITE_REPORT:-}" ]; then
    python3 -c 'import json,sys; c=json.loads(sys.argv[1]); c["peak_rss_mib"]=int(sys.argv[2]); print(json.dumps({"suite":"hostile corpus against hixbus up","counts":c}))' \
      "$(cat "$work/hostile.out")" "$peak_mib" >>"$HIXBUS_SUITE_REPORT"
  fi
fi

kill -INT "$up"
for _ in $(seq 1 100); do kill -0 "$up" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$up" 2>/dev/null; then echo "hixbus up ignored Ctrl-C" >&2; exit 1; fi
wait "$up" || { cat "$work/up.err"; echo "hixbus up exited with an error" >&2; exit 1; }
grep -q "hixbus stopped" "$work/up.out" || { echo "no clean shutdown" >&2; exit 1; }
grep -Eq "demo lab stopped after [1-9][0-9]* results" "$work/up.out" \
  || { cat "$work/up.out" "$work/up.err"; echo "the demo lab's results were not accepted over MLLP" >&2; exit 1; }
echo "hixbus up: ready in ${ready}s, tail saw 3 demo events (each audited), a prescription went clinic → pharmacy → dispensed → clinic and was billed and accepted (the pharmacy and insurer consoles showed it, the operator console showed the topics, groups and health, the patient signed in at the provider) and the patient saw it all in their own record (401 without signing in), lab results reached the hospital's inbox, a checkup reached its insurer only, the registry refused an anonymous change${hostile_summary}, Ctrl-C stopped it cleanly"
