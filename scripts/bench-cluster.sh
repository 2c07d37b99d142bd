#!/usr/bin/env bash
# Join time on one node against a cluster (docs/benchmarks.md, "Several
# nodes"): `callgate loadtest` (40 1:1 video calls) against one node, or
# against the first of N cluster nodes on one Redis, every node on core 0
# and the load generator on core 1. Run it where only loopback exists:
#     cargo build --release --features loadtest
#     unshare -n bash -c 'ip link set lo up; exec "$@"' _ scripts/bench-cluster.sh single
#     unshare -n bash -c 'ip link set lo up; exec "$@"' _ scripts/bench-cluster.sh cluster 2
# Metering is off on every node, so that only signaling, placement and
# media differ. Prints the load generator's join times (join to first
# media) and each node's placement time, relayed joins and rooms.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/target/release/callgate"
mode="${1:?single or cluster}"
nodes="${2:-2}"
[ "$mode" = single ] && nodes=1
work="$(mktemp -d /tmp/callgate-bench-cluster.XXXXXX)"
redis_port=6390
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  [ "$mode" = cluster ] && redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export CALLGATE_METERING_ENABLED=false
source "$root/scripts/bench-nodes.sh"
[ "$mode" = cluster ] && start_redis "$redis_port"
for i in $(seq 1 "$nodes"); do
  node_env=()
  # shellcheck disable=SC2207 # the settings are single words
  [ "$mode" = cluster ] && node_env=($(cluster_env "$i" "$redis_port"))
  start_node "$i" "${node_env[@]}" taskset -c 0
done
taskset -c 1 "$bin" loadtest --url ws://127.0.0.2:7880 --scenario video-calls --rooms 40 \
  --duration 10s --json >"$work/report.json" 2>"$work/loadtest.err"
python3 - "$work/report.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print("join to media:", json.dumps(report["media"]["join"]),
      "without media:", report["media"]["joins_without_media"])
PY
for i in $(seq 1 "$nodes"); do
  echo "node n$i:"
  curl -s "http://127.0.0.$((i + 1)):7880/metrics" | grep -E \
    '^callgate_cluster_placement_seconds_(sum|count)|^callgate_signaling_relayed_total|^callgate_rooms' || true
done
