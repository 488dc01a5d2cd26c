#!/usr/bin/env bash
# The allocator comparison of BENCHMARKS.md (`make bench-allocators`): the operator built with
# the system allocator, with jemalloc (the default feature `jemalloc`, tuned in src/main.rs) and
# with mimalloc (feature `mimalloc`), each benchmarked at 1,000 and 10,000 objects. The tables go
# to stdout and target/bench-results.md; compare peak and steady RSS (time and counts are the
# same job). Parameters: ALLOC_SIZES (default "1000 10000"), ALLOCATORS (default all three).
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p target/alloc
for allocator in ${ALLOCATORS:-system jemalloc mimalloc}; do
  # jemalloc is the default feature; the others build without it.
  case "$allocator" in
    jemalloc) features=() ;;
    system) features=(--no-default-features) ;;
    *) features=(--no-default-features --features "$allocator") ;;
  esac
  cargo build --release --locked --bin secprov-operator "${features[@]}"
  cp target/release/secprov-operator "target/alloc/$allocator"
done
# Leave target/release with the default build.
cargo build --release --locked --bin secprov-operator
cargo bench --locked --bench operator --no-run

for n in ${ALLOC_SIZES:-1000 10000}; do
  resync=10
  ((n > 1000)) && resync=60
  for allocator in ${ALLOCATORS:-system jemalloc mimalloc}; do
    echo "==> $allocator, N=$n"
    BENCH_OPERATOR="$PWD/target/alloc/$allocator" cargo bench --locked --bench operator -- \
      --n="$n" --latency-ms=50 --concurrency=16 --resync-s="$resync" --quiet-periods=1 \
      --restart=false --keep-cp | sed "s/^### secprov/### secprov ($allocator)/"
  done
done
