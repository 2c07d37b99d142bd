# Sourced by the cluster benchmarks (scripts/bench-cluster.sh,
# scripts/bench-ring.sh): a throwaway Redis, and callgate nodes n1, n2, …
# on 127.0.0.2, 127.0.0.3, … Expects `bin` (the callgate binary), `work`
# (a scratch directory) and `pids` (an array) to be set.

# Starts redis-server on loopback port $1 and waits until it answers.
start_redis() {
  redis-server --bind 127.0.0.1 --port "$1" --save "" --appendonly no \
    --daemonize yes --logfile "$work/redis.log"
  until redis-cli -p "$1" ping >/dev/null 2>&1; do sleep 0.1; done
}

# Starts node n$1 and waits until it is ready. The other arguments go to
# `env` before the binary: settings (VAR=value…), then a command to run it
# under if any (`taskset -c 0`).
start_node() {
  local i="$1" ip="127.0.0.$(($1 + 1))"
  shift
  env CALLGATE_HTTP_BIND="$ip" CALLGATE_RTC_BIND_IP="$ip" CALLGATE_TURN_BIND_IP="$ip" "$@" \
    "$bin" serve --dev --data-dir "$work/n$i" --http-port 7880 --udp-port 0 --tcp-port 0 \
    --workers 1 --no-turn >"$work/n$i.out" 2>"$work/n$i.err" &
  pids+=($!)
  until grep -q "callgate ready" "$work/n$i.out" 2>/dev/null; do sleep 0.1; done
}

# The cluster settings of node n$1 on the Redis at loopback port $2.
cluster_env() {
  echo "CALLGATE_CLUSTER_REDIS_URL=redis://127.0.0.1:$2/0" \
    "CALLGATE_CLUSTER_NODE_ID=n$1" "CALLGATE_CLUSTER_SECRET=bench-cluster-secret-0123"
}
