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
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "building"
cargo build --workspace --locked
cargo nextest run --workspace --locked --no-run

# Everything below runs offline, on loopback only.
run_isolated() {
  if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null 2>&1 \
     && unshare -n true 2>/dev/null; then
    unshare -n bash -c 'ip link set lo up 2>/dev/null || ifconfig lo up; exec "$@"' _ "$@"
  else
    "$@"
  fi
}

step "Rust tests (unit, end-to-end with webrtc clients)"
run_isolated cargo nextest run --workspace --locked --offline --no-fail-fast

step "browser test (headless Chromium, fake camera and microphone)"
TEST_CALLGATE_BIN="$root/target/debug/callgate" run_isolated node --test tests/browser/
