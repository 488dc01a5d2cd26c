#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ briefly (FUZZ_SECONDS each, default 20). Needs a nightly
# toolchain and cargo-fuzz; without nightly it says so and exits 0 (CI must not fail for a
# missing optional toolchain). A crash found by the fuzzer fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: skipped, no nightly toolchain (rustup toolchain install nightly to enable)"
  exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  if ! cargo install cargo-fuzz --locked; then
    echo "fuzz: skipped, cannot install cargo-fuzz"
    exit 0
  fi
fi
cd fuzz
if ! cargo +nightly fuzz build -O; then
  echo "fuzz: skipped, the fuzz targets do not build on this nightly (they are also compiled by cargo test)"
  exit 0
fi
for target in $(cargo +nightly fuzz list); do
  echo "fuzz: $target for ${seconds}s"
  mkdir -p "corpus/$target"; rm -rf "artifacts/$target"
  cargo +nightly fuzz run -O "$target" "corpus/$target" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 \
    | grep -E "^(stat::number_of_executed_units|==|SUMMARY|Done)|panicked|ERROR" || true
  # cargo fuzz exits non-zero on a crash and leaves the input under artifacts/.
  if compgen -G "artifacts/$target/*" >/dev/null; then
    echo "fuzz: $target crashed; reproduce with: cd fuzz && cargo +nightly fuzz run $target artifacts/$target/crash-*" >&2
    exit 1
  fi
done
echo "fuzz: all targets ran ${seconds}s without a crash"
