#!/usr/bin/env bash
# Heap profile of the operator with heaptrack (`make profile-heap`): the benchmark
# (benches/operator.rs) runs the profiling build of the operator with heaptrack's preload
# library, converges N objects, resyncs each of them during a quiet window of 2 resync
# periods, and then kills the operator. So heaptrack's "leaked" memory is what the operator
# held at rest, and its peak is the peak while converging or resyncing.
#
# Parameters: PROFILE_N (default 10000), PROFILE_LATENCY_MS (0), PROFILE_RESYNC_S (60),
# PROFILE_SHARDS (1). Output in target/profile/: heaptrack-N.zst (open it with heaptrack_gui),
# heap-N.txt (the report by allocation site, scripts/heap-report.py).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v heaptrack_print >/dev/null; then
  apt-get update -qq && apt-get install -y -qq heaptrack zstd
fi
N="${PROFILE_N:-10000}"
out=target/profile
mkdir -p "$out"
# The system allocator: heaptrack follows malloc, not jemalloc (the default feature).
cargo build --locked --profile profiling --no-default-features --bin secprov-operator
cargo bench --locked --bench operator --no-run

fifo="$(mktemp -u /tmp/heaptrack.XXXXXX)"
mkfifo "$fifo"
/usr/lib/heaptrack/libexec/heaptrack_interpret <"$fifo" | zstd -q -c >"$out/heaptrack-$N.zst" &
interpreter=$!
# A bench that fails before it starts the operator leaves the interpreter waiting on the pipe.
trap 'kill "$interpreter" 2>/dev/null || true; rm -f "$fifo"' EXIT

BENCH_OPERATOR="$PWD/target/profiling/secprov-operator" BENCH_HEAPTRACK="$fifo" \
  cargo bench --locked --bench operator -- --n="$N" --latency-ms="${PROFILE_LATENCY_MS:-0}" \
  --concurrency=16 --resync-s="${PROFILE_RESYNC_S:-60}" --quiet-periods=2 --restart=false \
  --shards="${PROFILE_SHARDS:-1}" --keep-cp
wait "$interpreter"

for cost in leaked peak; do
  heaptrack_print -f "$out/heaptrack-$N.zst" --flamegraph-cost-type "$cost" \
    -F "$out/stacks-$N-$cost.txt" >"$out/heaptrack-$N-summary.txt"
done
python3 scripts/heap-report.py "$out/stacks-$N-leaked.txt" "$out/stacks-$N-peak.txt" \
  "$out/heaptrack-$N-summary.txt" | tee "$out/heap-$N.txt"
