#!/usr/bin/env bash
# Ring time on one node against a cluster (docs/benchmarks.md, "Several
# nodes"): 50 calls, each `POST /v1/calls` to the first node ringing a
# presence connection on the last. One node, or N nodes on one Redis; the
# ledger on a PostgreSQL this script starts (as scripts/test.sh does).
# Run it where only loopback exists:
#     cargo build --release && (cd clients/js && npm ci)
#     unshare -n bash -c 'ip link set lo up; exec "$@"' _ scripts/bench-ring.sh single
#     unshare -n bash -c 'ip link set lo up; exec "$@"' _ scripts/bench-ring.sh cluster 2
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/target/release/callgate"
mode="${1:?single or cluster}"
nodes="${2:-2}"
[ "$mode" = single ] && nodes=1
calls=50
work="$(mktemp -d /tmp/callgate-bench-ring.XXXXXX)"
redis_port=6391
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
source <(sed -n '/^with_postgres() {/,/^export -f/p' "$root/scripts/test.sh" | grep -v '^export')
source "$root/scripts/bench-nodes.sh"

run() {
  local database="$CALLGATE_TEST_POSTGRES_URL"
  pids=()
  trap 'kill "${pids[@]}" 2>/dev/null || true; redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true; stop_postgres; rm -rf "$work"' EXIT
  [ "$mode" = cluster ] && start_redis "$redis_port"
  for i in $(seq 1 "$nodes"); do
    node_env=(CALLGATE_METERING_NODE_ID="n$i")
    # shellcheck disable=SC2207 # the settings are single words
    [ "$mode" = cluster ] && node_env=($(cluster_env "$i" "$redis_port"))
    start_node "$i" CALLGATE_METERING_DATABASE_URL="$database" "${node_env[@]}"
  done
  for c in $(seq 1 "$calls"); do
    echo "host$c $("$bin" token --dev --identity "host$c" --ttl 10m)"
  done >"$work/tokens"
  node "$root/scripts/bench-ring.mjs" "http://127.0.0.2:7880" "http://127.0.0.$((nodes + 1)):7880" \
    "$("$bin" token --dev --admin --ttl 10m)" "$work/tokens"
  for i in $(seq 1 "$nodes"); do
    echo "node n$i: $(curl -s "http://127.0.0.$((i + 1)):7880/metrics" | grep -E '^callgate_calls_started_total' || true)"
  done
}
with_postgres run
