#!/usr/bin/env bash
# callgate's TURN relay next to coturn, under the same turnutils_uclient load,
# on loopback only (docs/benchmarks.md, "TURN relay against coturn").
#
#   benches/turn-vs-coturn.sh [runs] [-- uclient load flags]
#   benches/turn-vs-coturn.sh 3 -- -n 3000 -z 2
#   PEER=1 benches/turn-vs-coturn.sh 3 -- -n 3000 -z 2
#
# Default: the clients relay to each other through the server (-y). With
# PEER=1 they relay to a turnutils_peer echo on 127.0.0.1 instead (-e/-r).
# Needs Debian's coturn (turnserver, turnutils_uclient): installed when missing.
# For each run and each server: start the server alone, run the load
# (100 clients, -c -m 100 -l 200), read the server's CPU time from /proc/PID/stat before and after,
# stop it. Prints one line per run and server:
#   server, messages sent/received, loss, relayed packets/s, server CPU,
#   CPU per forwarded packet = CPU / (2 x messages received), peak RSS.
# Every address is 127.0.0.1; the load is bounded by -n and -z.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

runs="${1:-3}"
shift || true
[ "${1:-}" = "--" ] && shift
load=("$@")
[ ${#load[@]} -eq 0 ] && load=(-n 3000 -z 2)

secret="turn-bench-secret-0123456789"
coturn_port=34790
callgate_port=34791
peer_port=34800
if [ -n "${PEER:-}" ]; then target=(-e 127.0.0.1 -r $peer_port); else target=(-y); fi
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

if ! command -v turnserver >/dev/null || ! command -v turnutils_uclient >/dev/null; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends coturn
fi
cargo build --release --locked --bin callgate >&2
callgate="$root/target/release/callgate"

cat >"$work/callgate.toml" <<EOF
[turn]
enabled = true
auth_secret = "$secret"
listeners = ["udp"]
# turnutils_uclient -y relays client to client through 127.0.0.1.
allow_peer_cidrs = ["127.0.0.1/32"]
max_bytes_per_second = 0
max_allocations_per_user = 1000
relay_port_min = 56000
relay_port_max = 60999
EOF

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
peak_rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# wait_udp PORT: until something listens on 127.0.0.1:PORT/udp (bounded).
wait_udp() {
  for _ in $(seq 100); do
    if ss -Hlun "sport = :$1" | grep -q .; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on udp port $1" >&2
  return 1
}

start_server() {
  case "$1" in
    coturn)
      turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 \
        --listening-port=$coturn_port --min-port=50000 --max-port=55000 \
        --use-auth-secret --static-auth-secret="$secret" --realm=callgate \
        --allow-loopback-peers --no-tls --no-dtls --no-tcp --no-tcp-relay --no-cli \
        --no-stdout-log --log-file=/dev/null >/dev/null 2>&1 &
      port=$coturn_port ;;
    callgate)
      RUST_LOG=warn "$callgate" turn --config "$work/callgate.toml" --http-port 0 \
        --turn-udp-port $callgate_port >/dev/null 2>&1 &
      port=$callgate_port ;;
  esac
  pid=$!
  wait_udp "$port"
}

if [ -n "${PEER:-}" ]; then
  turnutils_peer -L 127.0.0.1 -p $peer_port >/dev/null 2>&1 &
  wait_udp $peer_port
fi

printf '%-8s %5s %9s %9s %8s %11s %8s %10s %8s\n' \
  server run sent recv loss% relayed/s cpu_s cpu/fwd_us rss_MB
for run in $(seq "$runs"); do
  for server in coturn callgate; do
    start_server "$server"
    before=$(cpu_ticks "$pid")
    out="$work/$server-$run.log"
    timeout 300 turnutils_uclient -W "$secret" -u bench "${target[@]}" -c -m 100 -l 200 \
      "${load[@]}" -p "$port" 127.0.0.1 >"$out" 2>&1 || true
    after=$(cpu_ticks "$pid")
    rss=$(peak_rss_kb "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    sent=$(grep -o 'tot_send_msgs=[0-9]*' "$out" | tail -1 | cut -d= -f2)
    recv=$(grep -o 'tot_recv_msgs=[0-9]*' "$out" | tail -1 | cut -d= -f2)
    secs=$(grep -o 'Total transmit time is [0-9]*' "$out" | tail -1 | awk '{print $5}')
    loss=$(grep -o 'Total lost packets [0-9]* ([0-9.]*%)' "$out" | tail -1 | sed 's/.*(\(.*\)%)/\1/')
    awk -v s="$server" -v r="$run" -v sent="${sent:-0}" -v recv="${recv:-0}" -v loss="${loss:-?}" \
        -v secs="${secs:-0}" -v t=$((after - before)) -v hz="$ticks" -v rss="${rss:-0}" 'BEGIN {
      cpu = t / hz; fwd = 2 * recv
      printf "%-8s %5d %9d %9d %8s %11.0f %8.2f %10.2f %8.1f\n", s, r, sent, recv, loss,
        (secs > 0 ? fwd / secs : 0), cpu, (fwd > 0 ? cpu * 1e6 / fwd : 0), rss / 1024 }'
  done
done
