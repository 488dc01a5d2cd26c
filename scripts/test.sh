#!/usr/bin/env bash
# Unit tests and the end-to-end suite against a real control plane (tests/controlplane),
# started once for the whole run and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

CP_DIR="${SECPROV_CP_DIR:-$PWD/target/test-controlplane}"

echo "==> building (cargo build --workspace --all-targets --locked)"
cargo build --locked --workspace --all-targets

echo "==> starting the control plane in $CP_DIR"
KUBECONFIG_PATH="$(bash tests/controlplane/up.sh "$CP_DIR" | tail -n1)"
trap 'bash tests/controlplane/down.sh "$CP_DIR" >/dev/null 2>&1 || true' EXIT

# --tests runs the unit tests (lib and bins) too: once, not twice.
echo "==> unit, integration and end-to-end tests"
SECPROV_E2E_KUBECONFIG="$KUBECONFIG_PATH" cargo test --locked --workspace --tests -- "$@"
