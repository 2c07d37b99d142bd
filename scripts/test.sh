#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the tests need
# when it is missing (Chromium and Node from Debian, playwright-core from the
# lock file, cargo-nextest from crates.io), checks formatting and lints, then
# runs every Rust test and the browser test. Tests run in a network namespace
# that has only loopback when the machine allows it (root with unshare), so
# no test can send traffic anywhere else.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then $sudo apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

step() { printf '\n== %s\n' "$*"; }

step "installing what is missing"
[ -x /usr/bin/chromium ] || [ -n "${CHROMIUM:-}" ] || apt_install chromium
command -v node >/dev/null 2>&1 || apt_install nodejs npm
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
# The JS SDK package's development dependencies (TypeScript, werift, ws).
if [ ! -d clients/js/node_modules/werift ]; then
  (cd clients/js && npm ci --no-audit --no-fund --loglevel=error)
fi
# PostgreSQL (Debian's) for the metering tests' PostgreSQL half.
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  apt_install postgresql
  pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
fi
export pg_bin
# Redis (Debian's) for the cluster tests, which start their own servers.
command -v redis-server >/dev/null 2>&1 || apt_install redis-server

# A one-off build gains nothing from incremental compilation's cache, which
# is a quarter of the target directory's size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step "format and lints"
cargo fmt --all -- --check
# --all-features: the load generator too (feature `loadtest`, off in the
# server binary by default).
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "building"
cargo build --workspace --all-features --locked
cargo nextest run --workspace --all-features --locked --no-run
# The fuzz targets (their own workspace, release with overflow checks);
# built here, where the registry is reachable, and run offline below.
./scripts/fuzz.sh --build-only
# schemathesis for the API contract check below (PyPI, so while online).
./scripts/check-openapi.sh --install-only

step "operations kit (deploy/: metrics, Prometheus rules, dashboard, compose, systemd unit)"
CALLGATE_BIN="$root/target/debug/callgate" ./scripts/check-deploy.sh

# Everything below runs offline, on loopback only.
run_isolated() {
  if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null 2>&1 \
     && unshare -n true 2>/dev/null; then
    unshare -n bash -c 'ip link set lo up 2>/dev/null || ifconfig lo up; exec "$@"' _ "$@"
  else
    "$@"
  fi
}

# A throwaway PostgreSQL cluster on 127.0.0.1 (a free port, as the
# postgres user when run as root) for the duration of "$@", which sees it
# as CALLGATE_TEST_POSTGRES_URL (the metering tests create a database per
# test in it). Stopped and deleted on exit. Runs inside the loopback-only
# namespace, where the tests can reach it.
with_postgres() {
  pg_dir="$(mktemp -d /tmp/callgate-pg.XXXXXX)"
  pg_as=()
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$pg_dir"; pg_as=(runuser -u postgres --); fi
  trap stop_postgres EXIT
  local port=55432
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  "${pg_as[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null || return 1
  "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w -o \
    "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$pg_dir -c fsync=off -c max_connections=300" \
    start >/dev/null || { cat "$pg_dir/log" >&2; return 1; }
  CALLGATE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres" "$@"
}
stop_postgres() {
  "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
export -f with_postgres stop_postgres

step "Rust tests (unit, end-to-end with webrtc clients; metering on SQLite and PostgreSQL)"
run_isolated bash -c 'with_postgres "$@"' _ cargo nextest run --workspace --all-features --locked --offline --no-fail-fast

step "API contract (schemathesis against a dev server, docs/operations.md)"
CALLGATE_BIN="$root/target/debug/callgate" run_isolated ./scripts/check-openapi.sh

step "browser test (headless Chromium, fake camera and microphone)"
TEST_CALLGATE_BIN="$root/target/debug/callgate" run_isolated node --test tests/browser/

step "JS SDK package (clients/js: unit tests on fakes, its types, two rooms in Node on werift)"
TEST_CALLGATE_BIN="$root/target/debug/callgate" run_isolated node --test clients/js/test/

step "fuzz targets, 20 s each (a crash fails the suite; SECURITY.md has the long runs)"
run_isolated ./scripts/fuzz.sh 20
