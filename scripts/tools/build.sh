#!/usr/bin/env bash
# Build (once) and print the path of a Go tool pinned in scripts/tools/NAME/go.mod, the way
# tests/controlplane/up.sh builds kube-apiserver: from the Go module proxy with the committed
# go.mod/go.sum, static (CGO_ENABLED=0), -trimpath, cached under a key that hashes everything
# that determines the binary.
#
#   build.sh helm | promtool | gitops-verdict
#                                the LAST line of stdout is the absolute path of the binary
#
# Progress goes to stderr. Needs: go, flock.
# Environment:
#   SECPROV_TOOLS_CACHE   cache root (default: $HOME/.cache/secprov-tools)
set -euo pipefail

log() { printf 'tools: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $# -eq 1 ]] || { echo "usage: $0 helm|promtool|gitops-verdict" >&2; exit 2; }
NAME="$1"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC_DIR="$ROOT/$NAME"
[[ -f "$SRC_DIR/go.mod" ]] || die "no tool '$NAME' (no $SRC_DIR/go.mod)"
for tool in go flock; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found in PATH"
done

# The main package, its module and the build tags of each tool.
case "$NAME" in
  helm)
    PKG=helm.sh/helm/v3/cmd/helm MOD=helm.sh/helm/v3 TAGS=""
    VERSION_FLAGS() { echo "-X helm.sh/helm/v3/internal/version.version=$1"; } ;;
  promtool)
    # remove_all_sd: promtool's rule checks need no service-discovery plugins (cloud SDKs).
    PKG=github.com/prometheus/prometheus/cmd/promtool MOD=github.com/prometheus/prometheus
    TAGS="remove_all_sd"
    VERSION_FLAGS() { echo "-X github.com/prometheus/common/version.Version=$1"; } ;;
  gitops-verdict)
    # Our own main.go (tests/e2e_gitops.rs): kstatus and gopher-lua at the pinned versions.
    PKG=. MOD=sigs.k8s.io/cli-utils TAGS=""
    VERSION_FLAGS() { :; } ;;
  *) die "unknown tool '$NAME'" ;;
esac
VERSION="$(awk -v m="$MOD" '$1 == m && $2 ~ /^v[0-9]/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$SRC_DIR/go.mod")"
[[ -n "$VERSION" ]] || die "cannot find the $MOD version in $SRC_DIR/go.mod"

build_key() {
  {
    go version
    go env GOOS GOARCH
    cd "$SRC_DIR"
    cat go.mod go.sum tools.go
    if [[ -f main.go ]]; then cat main.go; fi
    echo "$PKG $TAGS"
    # The build command itself is part of the key.
    sed -n '/^build_tool()/,/^}/p' "$ROOT/build.sh"
  } | sha256sum | cut -c1-16
}

build_tool() {
  local out="$1"
  # GOWORK=off: ignore any go.work above us. CGO_ENABLED=0: a static binary, no C compiler.
  # -mod=readonly: go.mod/go.sum are committed and must be complete.
  (cd "$SRC_DIR" && GOWORK=off CGO_ENABLED=0 GOFLAGS='' go build \
    -mod=readonly -trimpath -buildvcs=false -tags="$TAGS" \
    -ldflags="-s -w $(VERSION_FLAGS "$VERSION")" -o "$out/$NAME" "$PKG")
}

CACHE_ROOT="${SECPROV_TOOLS_CACHE:-${HOME:?HOME is not set}/.cache/secprov-tools}"
BIN_DIR="$CACHE_ROOT/$NAME/$VERSION/$(build_key)"

if [[ ! -x "$BIN_DIR/$NAME" ]]; then
  mkdir -p "$(dirname "$BIN_DIR")"
  # Serialize concurrent builds of the same key.
  exec 8>"$BIN_DIR.lock"
  flock 8
  if [[ ! -x "$BIN_DIR/$NAME" ]]; then
    log "building $NAME $VERSION into $BIN_DIR (first time: minutes)"
    tmp="$(mktemp -d "$BIN_DIR.tmp.XXXXXX")"
    start=$SECONDS
    build_tool "$tmp" || { rm -rf "$tmp"; die "go build of $NAME failed"; }
    chmod 755 "$tmp"
    rm -rf "$BIN_DIR"
    mv "$tmp" "$BIN_DIR"
    log "built $NAME in $((SECONDS - start))s: $(du -sh "$BIN_DIR" | cut -f1)"
  fi
  flock -u 8
  exec 8>&-
fi
echo "$BIN_DIR/$NAME"
