#!/usr/bin/env bash
# The root filesystem of the operator's image, shared by `make image` (scripts/image.sh) and the
# Dockerfile so both ship the same files:
#
#   image-rootfs.sh BINARY DIR
#
# DIR gets the binary at /usr/local/bin/secprov-operator, the shared libraries it links (as
# `ldd` lists them, at the paths the dynamic loader looks them up by), the CA roots, and a
# passwd/group that name uid/gid 65532. Nothing else: no shell, no package manager.
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 BINARY DIR" >&2; exit 2; }
BIN="$1" ROOTFS="$2"
die() { printf 'image-rootfs: ERROR: %s\n' "$*" >&2; exit 1; }
[[ -x "$BIN" ]] || die "$BIN is not an executable"
command -v ldd >/dev/null 2>&1 || die "'ldd' not found in PATH"

rm -rf "$ROOTFS"
mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/etc/ssl/certs"
install -m 0755 "$BIN" "$ROOTFS/usr/local/bin/secprov-operator"

# `ldd` prints "name => /path (addr)" per library and "/path (addr)" for the loader; a static
# binary has neither.
libs="$(ldd "$BIN" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)"
for lib in $libs; do
  mkdir -p "$ROOTFS$(dirname "$lib")"
  install -m 0755 "$(readlink -f "$lib")" "$ROOTFS$lib"
done

# CA roots: the HTTPS clients use the roots compiled into the binary (webpki-roots) today; the
# bundle serves any client that reads the platform's roots (SSL_CERT_FILE in the image).
CA=/etc/ssl/certs/ca-certificates.crt
[[ -s "$CA" ]] || die "$CA missing (apt-get install ca-certificates)"
install -m 0644 "$CA" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$ROOTFS/etc/group"
chmod 0644 "$ROOTFS/etc/passwd" "$ROOTFS/etc/group"
