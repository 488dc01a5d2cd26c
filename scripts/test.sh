#!/usr/bin/env bash
# Unit tests and the end-to-end suite against a real control plane (tests/controlplane),
# started once for the whole run and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

CP_DIR="${SECPROV_CP_DIR:-$PWD/target/test-controlplane}"

# The Go builds (control plane, helm, promtool, gitops-verdict; each cached after its first
# build) run beside the Rust build: on a fresh machine each takes minutes, and cargo's link and
# single-crate phases leave a core idle that they can use.
mkdir -p target
go_log=target/go-builds.log
echo "==> Go builds in the background (control plane and tools; log in $go_log)"
(
  set -e
  bash tests/controlplane/up.sh --build-only
  for tool in helm promtool gitops-verdict; do bash scripts/tools/build.sh "$tool"; done
) >"$go_log" 2>&1 &
go_builds=$!
trap 'kill "$go_builds" 2>/dev/null || true' EXIT

echo "==> building (cargo build --workspace --all-targets --locked)"
start=$SECONDS
cargo build --locked --workspace --all-targets
echo "    built in $((SECONDS - start))s"

start=$SECONDS
if ! wait "$go_builds"; then
  cat "$go_log" >&2
  echo "ERROR: a Go build failed (above)" >&2
  exit 1
fi
trap - EXIT
echo "    Go builds done ($((SECONDS - start))s more after the Rust build)"

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

# The container image that tests/image.rs and tests/chart_runs_image.rs run: one release build
# (fat LTO, as shipped), or, with SECPROV_TEST_IMAGE_BIN=PATH (.ci/run), that binary packaged the
# same way without a second compile.
echo "==> image (make image${SECPROV_TEST_IMAGE_BIN:+ of $SECPROV_TEST_IMAGE_BIN})"
start=$SECONDS
SECPROV_IMAGE_ARCHIVE="$(IMAGE_BIN="${SECPROV_TEST_IMAGE_BIN:-}" bash scripts/image.sh | tail -n1)"
export SECPROV_IMAGE_ARCHIVE
echo "    image built in $((SECONDS - start))s"

echo "==> starting the control plane in $CP_DIR"
KUBECONFIG_PATH="$(bash tests/controlplane/up.sh "$CP_DIR" | tail -n1)"
trap 'bash tests/controlplane/down.sh "$CP_DIR" >/dev/null 2>&1 || true' EXIT

# --tests runs the unit tests (lib and bins) too: once, not twice.
echo "==> unit, integration and end-to-end tests"
SECPROV_E2E_KUBECONFIG="$KUBECONFIG_PATH" cargo test --locked --workspace --tests -- "$@"
