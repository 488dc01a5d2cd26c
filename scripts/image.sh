#!/usr/bin/env bash
# `make image`: build the operator's container image without a container engine and write it as
# an OCI image archive (also loadable by `docker load`, `podman load`, `kind load image-archive`):
#
#   target/image/secprov-operator.oci.tar
#
# The image holds only what scripts/image-rootfs.sh puts there (the release binary, the shared
# libraries it links, the CA roots, a passwd/group naming 65532): no shell, no package manager.
# It runs as 65532:65532. Its description (labels, env, user, port, entrypoint, cmd) is the
# Dockerfile's final stage, read by scripts/oci_image.py.
#
# Environment:
#   IMAGE_REF      name:tag the loaders give it (default ghcr.io/secprov/secprov-operator:VERSION)
#   IMAGE_SOURCE   the org.opencontainers.image.source label
#   IMAGE_SKIP_BUILD=1  package target/release/secprov-operator as it is (CI builds it once)
#   IMAGE_BIN=PATH      package this binary instead (no build): .ci/run packages the binary the
#                       tests were built with, so CI proves the packaging without a second,
#                       fat-LTO compile of everything (the shipped image is `make image`)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for tool in python3 git; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found in PATH"
done

VERSION="$(awk -F'"' '/^version *=/ { print $2; exit }' Cargo.toml)"
REF="${IMAGE_REF:-ghcr.io/secprov/secprov-operator:$VERSION}"
SOURCE="${IMAGE_SOURCE:-https://github.com/secprov/secprov-operator}"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || REVISION="$REVISION-dirty"
# Reproducible timestamps: the commit's time (SOURCE_DATE_EPOCH when set).
EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

BIN="${IMAGE_BIN:-target/release/secprov-operator}"
if [[ -z "${IMAGE_BIN:-}" && "${IMAGE_SKIP_BUILD:-}" != 1 ]]; then
  log "cargo build --release --locked --bin secprov-operator"
  cargo build --release --locked -p secprov-operator --bin secprov-operator
fi
[[ -x "$BIN" ]] || die "$BIN missing (run without IMAGE_SKIP_BUILD)"

OUT_DIR=target/image
ROOTFS="$OUT_DIR/rootfs"
bash scripts/image-rootfs.sh "$BIN" "$ROOTFS"

ARCHIVE="$OUT_DIR/secprov-operator.oci.tar"
# The labels, env, user, port, entrypoint and cmd are the Dockerfile's (its final stage).
python3 scripts/oci_image.py --rootfs "$ROOTFS" --out "$ARCHIVE" --ref "$REF" --epoch "$EPOCH" \
  --dockerfile Dockerfile --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" \
  --build-arg "SOURCE=$SOURCE" >"$OUT_DIR/summary.json"
log "$ARCHIVE ($REF): $(du -h "$ARCHIVE" | cut -f1) archive, $(du -sh "$ROOTFS" | cut -f1) unpacked"
echo "$PWD/$ARCHIVE"
