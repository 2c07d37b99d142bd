#!/usr/bin/env bash
# Checks the operations kit (deploy/, Dockerfile, docker-compose.yml,
# docs/deploying.md) on a machine without a Docker daemon or systemd:
#   (a) every metric name in the Grafana dashboard and the alert rules is
#       one callgate registers (a histogram's _bucket/_sum/_count too),
#       counters are read through rate()/increase(); and, with a binary
#       (CALLGATE_BIN, default target/debug/callgate), that a dev server's
#       /metrics has them, with the same types;
#   (b) promtool check rules / test rules / check config;
#   (c) the dashboard's JSON and each of its queries (promtool);
#   (d) the compose file (docker compose config, or docker-compose);
#   (e) docker build when a Docker daemon answers, else the build context;
#   (f) the systemd unit (systemd-analyze verify and security);
#   (g) deploy/callgate.toml with the compose file's environment, run by
#       the binary (its ledger in a throwaway PostgreSQL when one can be
#       started), and the container's health probe against it;
#   (h) the nginx and Caddy files (when those are installed), as shown in
#       docs/deploying.md.
# Installs promtool (Debian's prometheus), PyYAML and docker-compose when
# missing. Runs the servers in a network namespace with only loopback when
# the machine allows it (root with unshare). Exits non-zero on any failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

CALLGATE_BIN="${CALLGATE_BIN:-target/debug/callgate}"
case "$CALLGATE_BIN" in /*) ;; *) CALLGATE_BIN="$root/$CALLGATE_BIN" ;; esac

step() { printf '\n== %s\n' "$*"; }
ok() { printf '  ok: %s\n' "$*"; }
skipped() { printf '  skipped: %s\n' "$*"; }
die() { printf '  FAIL: %s\n' "$*" >&2; exit 1; }
metrics() { python3 scripts/check_deploy_metrics.py "$@"; }

# The server checks, run by the main part below (in a network namespace
# when possible): `check-deploy.sh --servers TMPDIR ISOLATED BINARY`.
servers() {
  local tmp="$1" isolated="$2" pid ready http status
  local bin="$3"
  # callgate refuses any CALLGATE_* variable that is not a setting, and
  # CALLGATE_BIN is this script's: the servers get only the ones set here.
  local v
  for v in $(compgen -e | grep '^CALLGATE_' || true); do unset "$v"; done
  # What to stop on the way out, failures included (global: the trap runs
  # after this function has returned).
  on_exit=":"
  trap 'eval "$on_exit"' EXIT
  # Starts "$@" in the background, waits for its ready line on stdout.
  start() {
    local out="$1"; shift
    "$@" >"$out" 2>"$out.err" &
    pid=$!
    on_exit="kill $pid 2>/dev/null || true; $on_exit"
    for _ in $(seq 150); do
      if grep -q ' ready ' "$out" 2>/dev/null; then
        ready="$(grep ' ready ' "$out")"
        http="$(sed -n 's/.* http=\([^ ]*\).*/\1/p' "$out")"
        return 0
      fi
      kill -0 "$pid" 2>/dev/null || { cat "$out.err" >&2; die "$* exited before it was ready"; }
      sleep 0.2
    done
    cat "$out.err" >&2
    die "$* was not ready within 30 s"
  }
  stop() {
    kill -TERM "$pid"
    status=0
    wait "$pid" || status=$?
    [ "$status" -eq 0 ] || { cat "$1.err" >&2; die "the server exited $status on SIGTERM"; }
  }

  step "(a) the metrics of a dev server ($bin)"
  if [ ! -x "$bin" ]; then
    skipped "no binary at $bin (cargo build, or set CALLGATE_BIN)"
  else
    start "$tmp/dev.out" "$bin" serve --dev --data-dir "$tmp/dev" --workers 2 \
      --http-port 0 --udp-port 0 --tcp-port 0 --turn-udp-port 0 --turn-tcp-port 0 --turn-tls-port 0
    curl -fsS "http://$http/metrics" >"$tmp/metrics.txt"
    metrics check --live "$tmp/metrics.txt"
    # The Docker image's health probe, against a server that answers.
    CALLGATE_HTTP_PORT="${http##*:}" bash deploy/docker/healthcheck.sh \
      || die "deploy/docker/healthcheck.sh failed against a healthy server"
    ok "deploy/docker/healthcheck.sh: /healthz answered 200"
    stop "$tmp/dev.out"
    ok "the dev server stopped on SIGTERM with status 0"
  fi

  step "(g) deploy/callgate.toml with docker-compose.yml's environment"
  if [ ! -x "$bin" ]; then
    skipped "no binary at $bin"
    return 0
  fi
  # The environment compose gives the container, from the example .env.
  local -a env=()
  while IFS= read -r line; do env+=("$line"); done \
    < <(metrics compose-env PUBLIC_IP=127.0.0.1 deploy/docker/env.example)
  local db_url="" pg_dir="" pg_bin
  for e in "${env[@]}"; do
    case "$e" in CALLGATE_METERING_DATABASE_URL=*) db_url="${e#*=}" ;; esac
  done
  pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
  local -a run=(env CALLGATE_DATA_DIR="$tmp/data")
  local -a flags=()
  if [ "$isolated" = 1 ] && [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] && [ "$(id -u)" -eq 0 ]; then
    # PostgreSQL as compose runs it: user and database callgate, the
    # password from the example .env, 127.0.0.1:5432 (free in this namespace).
    local user_pass="${db_url#postgres://}"; user_pass="${user_pass%%@*}"
    local pass="${user_pass#*:}"
    pg_dir="$(mktemp -d /tmp/callgate-check-pg.XXXXXX)"; chown postgres "$pg_dir"
    on_exit="$on_exit; runuser -u postgres -- $(printf %q "$pg_bin/pg_ctl") -D $(printf %q "$pg_dir/data") -m immediate stop >/dev/null 2>&1 || true; rm -rf $(printf %q "$pg_dir")"
    runuser -u postgres -- "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
      -o "-c listen_addresses=127.0.0.1 -p 5432 -c unix_socket_directories=$pg_dir -c fsync=off" start >/dev/null
    "$pg_bin/psql" -h 127.0.0.1 -p 5432 -U postgres -qc "CREATE USER callgate PASSWORD '$pass'" postgres
    "$pg_bin/psql" -h 127.0.0.1 -p 5432 -U postgres -qc "CREATE DATABASE callgate OWNER callgate" postgres
  else
    # No PostgreSQL here: the ledger in SQLite under the data directory.
    db_url=""
    echo "  (no PostgreSQL to start here: the ledger goes to SQLite)"
  fi
  for e in "${env[@]}"; do
    case "$e" in CALLGATE_METERING_DATABASE_URL=*) [ -n "$db_url" ] || continue ;; esac
    run+=("$e")
  done
  if [ "$isolated" != 1 ]; then
    # Not in a namespace of our own: loopback and free ports instead of the
    # file's 0.0.0.0 and fixed ports.
    run+=(CALLGATE_HTTP_BIND=127.0.0.1 CALLGATE_RTC_BIND_IP=127.0.0.1 CALLGATE_TURN_BIND_IP=127.0.0.1)
    flags=(--http-port 0 --udp-port 0 --tcp-port 0 --turn-udp-port 0 --turn-tcp-port 0)
  fi
  start "$tmp/prod.out" "${run[@]}" "$bin" serve --config deploy/callgate.toml "${flags[@]}"
  ok "$ready"
  if [ -n "$pg_dir" ]; then
    grep -q '"message":"meter open","backend":"Postgres"' "$tmp/prod.out.err" \
      || { cat "$tmp/prod.out.err" >&2; die "the meter did not open on PostgreSQL"; }
    ok "the ledger is in PostgreSQL (CALLGATE_METERING_DATABASE_URL of docker-compose.yml)"
  fi
  CALLGATE_HTTP_PORT="${http##*:}" bash deploy/docker/healthcheck.sh || die "health probe failed"
  local token
  token="$("${run[@]}" "$bin" token --config deploy/callgate.toml --admin)"
  curl -fsS -o /dev/null -H "Authorization: Bearer $token" "http://$http/v1/rooms" \
    || die "GET /v1/rooms with a token from CALLGATE_KEYS failed"
  ok "health probe and an API request with a token signed by CALLGATE_KEYS"
  stop "$tmp/prod.out"
}

if [ "${1:-}" = "--servers" ]; then
  servers "$2" "$3" "$4"
  exit 0
fi

started=$SECONDS
tmp="$(mktemp -d /tmp/callgate-check-deploy.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then $sudo apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

step "installing what is missing"
command -v promtool >/dev/null 2>&1 || apt_install prometheus
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml || apt_install python3-yaml
command -v curl >/dev/null 2>&1 || apt_install curl
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose || true
  if docker-compose version >/dev/null 2>&1; then compose=(docker-compose); fi
fi
promtool --version 2>&1 | head -n1

step "(a) metric names in the dashboard and the alert rules"
metrics check
# Self-test: a misspelled metric name must fail the check.
sed 's/callgate_nacks_total/callgate_nack_total/' deploy/grafana/callgate.json >"$tmp/broken.json"
if CHECK_DEPLOY_DASHBOARD="$tmp/broken.json" metrics check >/dev/null 2>"$tmp/broken.err"; then
  die "the check passed a dashboard with an unknown metric name"
fi
grep -q 'callgate_nack_total' "$tmp/broken.err" || die "the check failed for another reason: $(cat "$tmp/broken.err")"
ok "self-test: a dashboard naming callgate_nack_total fails the check"

step "(b) Prometheus rules and configuration"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml
promtool check config deploy/prometheus/prometheus.yml

step "(c) the Grafana dashboard"
metrics dashboard
metrics promql-rules "$tmp/dashboard-rules.yml"
promtool check rules "$tmp/dashboard-rules.yml" >/dev/null || promtool check rules "$tmp/dashboard-rules.yml"
ok "every dashboard query parses (promtool)"

step "(d) docker-compose.yml"
if [ "${#compose[@]}" -gt 0 ]; then
  "${compose[@]}" --env-file deploy/docker/env.example config -q
  ok "${compose[*]} config -q (with deploy/docker/env.example)"
else
  skipped "no docker compose"
fi

step "(e) Dockerfile"
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  docker build -t callgate:check-deploy .
  ok "docker build"
else
  skipped "no Docker daemon: docker build"
  # The build context as .dockerignore leaves it (docker-py's matcher,
  # installed with docker-compose) must hold what the build reads.
  ctx_py=""
  for py in /usr/bin/python3 python3; do
    if "$py" -c 'import docker.utils.build' 2>/dev/null; then ctx_py="$py"; break; fi
  done
  if [ -z "$ctx_py" ]; then
    skipped "the build context (no docker-py to read .dockerignore)"
  else
    "$ctx_py" - "$tmp/context.txt" <<'EOF'
import re, sys
from docker.utils.build import exclude_paths
patterns = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
files = set(exclude_paths(".", patterns))
open(sys.argv[1], "w").write("\n".join(sorted(files)) + "\n")
need = ["Cargo.toml", "Cargo.lock"]
# What the Dockerfile copies from the context.
for line in open("Dockerfile"):
    m = re.match(r"COPY\s+(?:--chmod=\S+\s+)?(?!--from)(\S+)\s+\S+\s*$", line.strip())
    if m and m.group(1) != ".":
        need.append(m.group(1))
# What the crates read at compile time: include_str!/include_bytes! files
# and sqlx::migrate! directories.
import os
for d, _, fs in os.walk("."):
    if "/target" in d or "/." in d or d.startswith("./fuzz"):
        continue
    for f in fs:
        if not f.endswith(".rs"):
            continue
        path = os.path.join(d, f)
        text = open(path, encoding="utf-8", errors="replace").read()
        for m in re.finditer(r'include_(?:str|bytes)!\("([^"]+)"\)', text):
            need.append(os.path.normpath(os.path.join(os.path.dirname(path), m.group(1))))
        for m in re.finditer(r'migrate!\("([^"]+)"\)', text):
            crate = path.split("/src/")[0]
            need.append(os.path.normpath(os.path.join(crate, m.group(1))) + "/")
missing = [n for n in need if not (n in files or (n.endswith("/") and any(f.startswith(n) for f in files)))]
if missing:
    sys.exit("  FAIL: the build context lacks " + ", ".join(missing))
if any(f.startswith(("target/", ".git/")) or "/node_modules/" in f for f in files):
    sys.exit("  FAIL: the build context holds target/, .git/ or node_modules/")
print(f"  ok: the build context ({len(files)} files) holds the {len(need)} files and directories the build reads")
EOF
    if command -v cargo >/dev/null 2>&1 && cargo metadata --locked --offline --format-version 1 >/dev/null 2>&1; then
      mkdir -p "$tmp/context"
      tar -cf - -T "$tmp/context.txt" | tar -xf - -C "$tmp/context"
      (cd "$tmp/context" && cargo metadata --locked --offline --format-version 1 >/dev/null) \
        || die "the workspace does not resolve from the build context alone (--locked)"
      ok "the workspace and Cargo.lock resolve from the build context alone (cargo metadata --locked)"
    fi
  fi
fi

step "(f) deploy/systemd/callgate.service"
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify wants ExecStart's binary to exist: point it at one that does.
  exe=/bin/true
  [ -x "$CALLGATE_BIN" ] && exe="$CALLGATE_BIN"
  mkdir -p "$tmp/unit"
  sed "s|^ExecStart=/usr/local/bin/callgate |ExecStart=$exe |" deploy/systemd/callgate.service >"$tmp/unit/callgate.service"
  systemd-analyze verify "$tmp/unit/callgate.service"
  ok "systemd-analyze verify"
  if systemd-analyze security --offline=yes "$tmp/unit/callgate.service" >"$tmp/security.txt" 2>&1; then
    printf '  %s\n' "$(grep -i 'overall exposure' "$tmp/security.txt")"
  fi
else
  skipped "no systemd-analyze"
fi

# (a) and (g): servers, in a namespace with only loopback when possible.
isolated=0
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null 2>&1 && unshare -n true 2>/dev/null; then
  isolated=1
  unshare -n bash -c 'ip link set lo up 2>/dev/null || ifconfig lo up; exec "$@"' _ \
    "$root/scripts/check-deploy.sh" --servers "$tmp" 1 "$CALLGATE_BIN"
else
  "$root/scripts/check-deploy.sh" --servers "$tmp" 0 "$CALLGATE_BIN"
fi

step "(h) reverse proxy files"
metrics doc-blocks
if command -v nginx >/dev/null 2>&1; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=callgate.example.org \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
  sed -e "s|/etc/letsencrypt/live/callgate.example.org/fullchain.pem|$tmp/cert.pem|" \
      -e "s|/etc/letsencrypt/live/callgate.example.org/privkey.pem|$tmp/key.pem|" \
      deploy/nginx/callgate.conf >"$tmp/site.conf"
  printf 'pid %s/nginx.pid;\nerror_log stderr;\nevents {}\nhttp {\n  include %s/site.conf;\n}\n' \
    "$tmp" "$tmp" >"$tmp/nginx.conf"
  nginx -t -q -c "$tmp/nginx.conf"
  ok "nginx -t (deploy/nginx/callgate.conf, in an http block)"
else
  skipped "nginx -t (nginx not installed)"
fi
if command -v caddy >/dev/null 2>&1; then
  caddy validate --adapter caddyfile --config deploy/caddy/Caddyfile >/dev/null 2>"$tmp/caddy.err" \
    || { cat "$tmp/caddy.err" >&2; die "caddy validate"; }
  ok "caddy validate (deploy/caddy/Caddyfile)"
else
  skipped "caddy validate (caddy not installed)"
fi

printf '\ncheck-deploy: all checks passed in %ss (servers isolated: %s)\n' "$((SECONDS - started))" \
  "$([ "$isolated" = 1 ] && echo yes || echo no)"
