#!/usr/bin/env bash
# The server API against its contract (docs/operations.md, "API contract"):
# starts a dev server on loopback, then schemathesis (PyPI) reads
# /v1/openapi.json and sends property-based requests to every operation,
# failing on any 5xx and on any response that the document does not
# describe (status, content type, headers, body schema).
#
#   scripts/check-openapi.sh                 install if missing, then check
#   scripts/check-openapi.sh --install-only  only install (needs PyPI)
#
# The check itself needs no network but loopback, so it runs inside
# `unshare -n` once installed. Environment:
#   CALLGATE_BIN          the server (default target/debug/callgate, built
#                         when missing)
#   SCHEMATHESIS_VENV     where schemathesis is installed
#                         (default target/schemathesis-venv)
#   SCHEMATHESIS_EXAMPLES test cases per operation and phase (default 25)
#   SCHEMATHESIS_SEED     the seed (default fixed, for a reproducible run;
#                         `random` for a new one each run)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

schemathesis_version="4.32.5"
venv="${SCHEMATHESIS_VENV:-$root/target/schemathesis-venv}"
bin="${CALLGATE_BIN:-$root/target/debug/callgate}"
examples="${SCHEMATHESIS_EXAMPLES:-25}"
seed="${SCHEMATHESIS_SEED:-20261128}"

install() {
  if [ -x "$venv/bin/schemathesis" ] \
     && [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" = "schemathesis, version $schemathesis_version" ]; then
    return
  fi
  echo "installing schemathesis $schemathesis_version into $venv" >&2
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 keeps venv in a package of its own.
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
}

install
if [ "${1:-}" = "--install-only" ]; then exit 0; fi

if [ ! -x "$bin" ]; then
  cargo build --locked -p callgate
fi

work="$(mktemp -d /tmp/callgate-openapi.XXXXXX)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A dev node on loopback, every port picked free; it prints
# `callgate ready http=127.0.0.1:PORT …` once it serves.
mkdir "$work/data"
# callgate refuses CALLGATE_* variables it does not know (a misspelt
# setting must not pass unnoticed): this script's own stays out.
env -u CALLGATE_BIN "$bin" serve --dev --data-dir "$work/data" --http-port 0 --udp-port 0 --tcp-port 0 --no-turn \
  >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
http=""
for _ in $(seq 1 300); do
  http="$(sed -n 's/^callgate ready http=\([^ ]*\).*/\1/p' "$work/server.out")"
  if [ -n "$http" ]; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ -z "$http" ]; then
  echo "the server did not start:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
base="http://$http"
"$venv/bin/python" - "$base/healthz" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit("no /healthz")
PY

token="$(env -u CALLGATE_BIN "$bin" token --dev --admin --ttl 30m)"
seed_flag=(--seed "$seed")
if [ "$seed" = "random" ]; then seed_flag=(); fi

# Every check that compares a response with the document, and no 5xx.
# The Razorpay webhook is in the run too: unsigned, it answers the
# documented 401 `bad_signature` (or 404 `not_configured`).
cd "$work"
status=0
"$venv/bin/schemathesis" run "$base/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --max-examples "$examples" "${seed_flag[@]}" \
  --phases examples,coverage,fuzzing,stateful \
  --workers 2 --request-timeout 10 --generation-database :memory: \
  --suppress-health-check all \
  --warnings off --no-color || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis failed ($status); the server's log:" >&2
  tail -n 50 "$work/server.log" >&2
fi
exit "$status"
