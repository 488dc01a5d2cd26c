#!/usr/bin/env bash
# Unit tests and the end-to-end suite against a real control plane (tests/controlplane),
# started once for the whole run and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

CP_DIR="${SECPROV_CP_DIR:-$PWD/target/test-controlplane}"

echo "==> building (cargo build --workspace --all-targets --locked)"
cargo build --locked --workspace --all-targets

# helm and promtool for the chart and alert tests, gitops-verdict (kstatus and gopher-lua) for
# the GitOps conformance tests, built from the Go module proxy and cached like the control
# plane (scripts/tools/build.sh); the tests fail without them.
echo "==> tools: helm, promtool, gitops-verdict (scripts/tools/build.sh, cached in ~/.cache/secprov-tools)"
start=$SECONDS
SECPROV_HELM="$(bash scripts/tools/build.sh helm | tail -n1)"
SECPROV_PROMTOOL="$(bash scripts/tools/build.sh promtool | tail -n1)"
SECPROV_GITOPS_VERDICT="$(bash scripts/tools/build.sh gitops-verdict | tail -n1)"
export SECPROV_HELM SECPROV_PROMTOOL SECPROV_GITOPS_VERDICT
echo "    tools ready in $((SECONDS - start))s"

# The container image that tests/image.rs unpacks and runs (one release build).
echo "==> image (make image)"
start=$SECONDS
SECPROV_IMAGE_ARCHIVE="$(bash scripts/image.sh | tail -n1)"
export SECPROV_IMAGE_ARCHIVE
echo "    image built in $((SECONDS - start))s"

echo "==> starting the control plane in $CP_DIR"
KUBECONFIG_PATH="$(bash tests/controlplane/up.sh "$CP_DIR" | tail -n1)"
trap 'bash tests/controlplane/down.sh "$CP_DIR" >/dev/null 2>&1 || true' EXIT

# --tests runs the unit tests (lib and bins) too: once, not twice.
echo "==> unit, integration and end-to-end tests"
SECPROV_E2E_KUBECONFIG="$KUBECONFIG_PATH" cargo test --locked --workspace --tests -- "$@"
