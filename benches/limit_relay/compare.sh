#!/usr/bin/env bash
# callgate against the limit relay, as docs/benchmarks.md reports it: both
# servers pinned to core 0, the load generator to core 1, each scenario run
# against each server, then a livestream sweep with a chart. Results (JSON,
# tables, SVG) go to $OUT (default target/loadtest). Loopback only.
#
#     benches/limit_relay/compare.sh            # about 10 minutes
#     DURATION=10s SWEEP=10,50,100 benches/limit_relay/compare.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="${OUT:-$root/target/loadtest}"
duration="${DURATION:-20s}"
sweep="${SWEEP:-10,50,100,200,400}"
mkdir -p "$out"

cargo build --release --locked --features loadtest --bin callgate
cargo bench --locked --bench limit_relay --no-run
relay_bin="$(ls -t target/release/deps/limit_relay-* | grep -v '\.d$' | head -1)"
# Copies, so a rebuild while this runs does not swap the binaries under it.
cp target/release/callgate "$out/callgate"
cp "$relay_bin" "$out/limit_relay"

data="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$data"
}
trap cleanup EXIT

CALLGATE_ROOM_MAX_PARTICIPANTS=2000 taskset -c 0 "$out/callgate" serve --dev \
  --http-port 7880 --udp-port 7882 --tcp-port 7881 --workers 1 --data-dir "$data" \
  >"$out/callgate.out" 2>"$out/callgate.err" &
callgate_pid=$!
pids+=("$callgate_pid")
taskset -c 0 "$out/limit_relay" --http-port 7890 --udp-port 7892 \
  >"$out/relay.out" 2>"$out/relay.err" &
relay_pid=$!
pids+=("$relay_pid")
for port in 7880 7890; do
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done

loadtest() { taskset -c 1 "$out/callgate" loadtest --quiet --duration "$duration" "$@"; }

# name, then the scenario's flags
scenarios=(
  "audio-room|--scenario audio-room --subscribers 200"
  "video-calls|--scenario video-calls --rooms 50"
  "meeting|--scenario meeting --rooms 4 --publishers 8"
  "livestream|--scenario livestream --subscribers 300"
)
for entry in "${scenarios[@]}"; do
  name="${entry%%|*}"
  read -r -a flags <<<"${entry#*|}"
  echo "== $name"
  loadtest --url ws://127.0.0.1:7890 --server-pid "$relay_pid" "${flags[@]}" --json \
    >"$out/$name.relay.json"
  loadtest --url ws://127.0.0.1:7880 --server-pid "$callgate_pid" "${flags[@]}" --json \
    >"$out/$name.callgate.json"
done

echo "== livestream sweep subscribers=$sweep"
loadtest --url ws://127.0.0.1:7890 --server-pid "$relay_pid" --scenario livestream \
  --sweep "subscribers=$sweep" --chart "$out/sweep.relay.svg" --json >"$out/sweep.relay.json"
loadtest --url ws://127.0.0.1:7880 --server-pid "$callgate_pid" --scenario livestream \
  --sweep "subscribers=$sweep" --baseline "$out/sweep.relay.json" \
  --chart "$out/sweep.svg" --json >"$out/sweep.callgate.json"

# One table: callgate's CPU per forwarded packet over the relay's.
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
def us(r): return (r.get("server") or {}).get("cpu_us_per_forwarded_packet")
print("| scenario | forwarded/s | callgate µs/pkt | limit µs/pkt | ratio | loss % | latency p50/p99 ms | join p50/p99 ms |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for name in ["audio-room", "video-calls", "meeting", "livestream"]:
    c = json.loads((out / f"{name}.callgate.json").read_text())
    r = json.loads((out / f"{name}.relay.json").read_text())
    m = c["media"]
    ratio = us(c) / us(r) if us(c) and us(r) else float("nan")
    print(f"| {name} | {c['server']['forwarded_per_sec']:,.0f} | {us(c):.2f} | {us(r):.2f} | {ratio:.2f} "
          f"| {m['loss_pct']:.3f} | {m['latency']['p50_ms']:.2f} / {m['latency']['p99_ms']:.2f} "
          f"| {m['join']['p50_ms']:.0f} / {m['join']['p99_ms']:.0f} |")
s = json.loads((out / "sweep.callgate.json").read_text())
print()
print("| subscribers | forwarded/s | server CPU % | callgate µs/pkt | limit µs/pkt | ratio | loss % | latency p99 ms | load generator CPU % |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for st in s["steps"]:
    rep, srv = st["report"], st["report"]["server"]
    base = st.get("baseline_us_per_packet")
    c = srv["cpu_us_per_forwarded_packet"]
    print(f"| {st['value']} | {srv['forwarded_per_sec']:,.0f} | {srv['cpu_pct']:.0f} | {c:.2f} | "
          f"{base:.2f} | {c / base:.2f} | {rep['media']['loss_pct']:.3f} | "
          f"{rep['media']['latency']['p99_ms']:.2f} | {rep['loadgen_cpu_pct']:.0f} |")
PY
echo "results in $out"
