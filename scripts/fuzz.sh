#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer) for a while each,
# one after the other, and fails when one of them crashes.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#   scripts/fuzz.sh --build-only      (fetch and build, run nothing)
#
# Defaults: 20 seconds, every target (`cargo fuzz list`). Needs cargo-fuzz
# (`cargo install cargo-fuzz --locked`); RUSTC_BOOTSTRAP=1 lets the stable
# toolchain take the nightly flags it passes. Targets are built with
# debug assertions and overflow checks on (fuzz/Cargo.toml), so an
# overflow is a crash, as is a panic, an assertion of a target, a hang
# (30 s) or running out of memory. No sanitizer by default: what is
# hunted is panics and overflows in safe Rust, and AddressSanitizer costs
# half the executions; FUZZ_SANITIZER=address (a build of its own) adds it. Seeds come from fuzz/corpus/<target>/ (checked in);
# what libFuzzer finds goes to fuzz/corpus-work/<target>/ (not checked
# in), a crashing input to fuzz/artifacts/<target>/. SECURITY.md records
# the runs.
set -euo pipefail
cd "$(dirname "$0")/.."

build_only=""
if [ "${1:-}" = "--build-only" ]; then build_only=1; shift; fi
seconds=${1:-20}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: $0 [seconds-per-target] [target...]" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 2
fi
export RUSTC_BOOTSTRAP=1
build_flags=(-O --debug-assertions --sanitizer "${FUZZ_SANITIZER:-none}")

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "fuzz: building ${targets[*]}"
cargo fuzz build "${build_flags[@]}" >/dev/null
if [ -n "$build_only" ]; then exit 0; fi

crashed=()
logs=fuzz/target/logs
mkdir -p "$logs"
for target in "${targets[@]}"; do
  work=fuzz/corpus-work/$target
  mkdir -p "$work" "fuzz/corpus/$target"
  log=$logs/$target.log
  status=0
  # The first corpus directory takes what libFuzzer finds; the seeds stay
  # untouched. -timeout: an input taking 30 s is a hang (the rtp_rtcp
  # target's first input connects its clients).
  cargo fuzz run "${build_flags[@]}" "$target" "$work" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -1)
  execs=${execs:-0}
  if [ "$status" -eq 0 ]; then
    result=ok
  else
    result="CRASH (exit $status)"
    crashed+=("$target")
  fi
  printf 'fuzz: %-18s %6s s %12s execs %9s exec/s  %s\n' \
    "$target" "$seconds" "$execs" "$((execs / seconds))" "$result"
  if [ "$status" -ne 0 ]; then
    grep -E 'panicked|ERROR: |SUMMARY|Test unit written' "$log" | head -20 >&2 || true
    echo "fuzz: full log in $log" >&2
  fi
done

if [ ${#crashed[@]} -gt 0 ]; then
  echo "fuzz: ${#crashed[@]} of ${#targets[@]} targets crashed: ${crashed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds} s each, none crashed"
