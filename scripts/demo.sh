#!/usr/bin/env bash
# `make demo`: a thin wrapper over the harness's demo (harness/src/demo.rs). It checks the
# prerequisites, builds the two optimised binaries it runs (no debug build), and runs the demo:
# a local control plane, the three simulators on free loopback ports (or the ports in
# SECPROV_DEMO_COVEO_PORT, SECPROV_DEMO_KEYSTONE_PORT, SECPROV_DEMO_JITSUDO_PORT), the operator,
# examples/ applied with the simulators' addresses filled in, identities pushed through the
# Coveo Push API, the reconciled status; until Ctrl-C, then it cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
CP_DIR="$PWD/target/demo-controlplane"

missing=()
for tool in cargo go kubectl openssl python3 curl flock setsid; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "demo: missing prerequisite(s): ${missing[*]} (needs Rust, Go, kubectl, openssl, python3, curl, and flock and setsid from util-linux)" >&2
  exit 1
fi

# The control plane outlives a demo killed while it starts: stop it on any exit.
trap 'bash tests/controlplane/down.sh "$CP_DIR" >/dev/null 2>&1 || true' EXIT
trap 'exit 130' INT TERM

# The operator exactly as `make image` and `make bench` build it (one release build serves all
# three), and the demo driver with the benchmark's profile (no whole-program optimisation:
# seconds to link instead of minutes; it only drives the operator).
if [[ -x target/release/secprov-operator ]]; then
  echo "==> cargo build --release secprov-operator (built before: seconds, unless the sources changed)"
else
  echo "==> cargo build --release secprov-operator (first build: whole-program optimised: about 8-10 minutes on 2 idle cores, more when they are busy)"
fi
start=$SECONDS
cargo build --release --locked -p secprov-operator --bin secprov-operator
echo "    built in $((SECONDS - start))s"
if [[ -x target/release/demo ]]; then
  echo "==> cargo build --profile bench demo (built before: seconds)"
else
  echo "==> cargo build --profile bench demo (first build: about 3-4 minutes on 2 cores)"
fi
start=$SECONDS
cargo build --profile bench --locked -p secprov-harness --bin demo
echo "    built in $((SECONDS - start))s"
target/release/demo
