#!/usr/bin/env bash
# Start a real Kubernetes control plane (upstream kube-apiserver, embedded etcd and
# kube-controller-manager with the namespace and garbage-collector controllers) on
# loopback for tests and the demo.
#
#   up.sh DIR            start (or reuse) a control plane whose state lives in DIR;
#                        the LAST line of stdout is the absolute path of DIR/kubeconfig
#   up.sh --build-only   only build (or find) the cached binaries; prints their directory
#   up.sh --check-cache  exit 0 when the binaries are cached (a start takes seconds), 1 when
#                        the next start builds them first
#
# Progress goes to stderr. Needs: go, kubectl, openssl, python3 (and flock, setsid
# from util-linux). Stop with down.sh DIR.
#
# Environment:
#   SECPROV_CP_CACHE     cache root for binaries (default: $HOME/.cache/secprov-controlplane)
#   SECPROV_CP_TIMEOUT   seconds to wait for readiness of each component (default: 120)
set -euo pipefail

log() { printf 'controlplane: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() { echo "usage: $0 DIR | $0 --build-only" >&2; exit 2; }
[[ $# -eq 1 ]] || usage

SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TIMEOUT="${SECPROV_CP_TIMEOUT:-120}"

for tool in go kubectl openssl python3 flock setsid; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found in PATH"
done

# ---------------------------------------------------------------- build ----
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v[0-9]/ { print $2; exit }' "$SRC_DIR/go.mod")"
[[ -n "$K8S_VERSION" ]] || die "cannot find the k8s.io/kubernetes version in $SRC_DIR/go.mod"

# The cache key covers everything that determines the binaries.
build_key() {
  {
    go version
    go env GOOS GOARCH
    cd "$SRC_DIR"
    cat go.mod go.sum tools.go
    find cmd -type f -name '*.go' | LC_ALL=C sort | xargs cat
    # The build command itself (see build_binaries) is part of the key.
    sed -n '/^build_binaries()/,/^}/p' "$SRC_DIR/up.sh"
  } | sha256sum | cut -c1-16
}

build_binaries() {
  local out="$1" vpkg ldflags
  local major minor
  major="${K8S_VERSION#v}"; major="${major%%.*}"
  minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for vpkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor"
    ldflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.gitCommit="
  done
  # GOWORK=off: ignore any go.work above us. CGO_ENABLED=0: static binaries,
  # no C compiler needed (upstream builds kube-apiserver the same way).
  # -mod=readonly: go.mod/go.sum are committed and must be complete.
  (cd "$SRC_DIR" && GOWORK=off CGO_ENABLED=0 GOFLAGS='' go build \
    -mod=readonly -trimpath -buildvcs=false -ldflags="$ldflags" \
    -o "$out/" ./cmd/etcd k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager)
}

CACHE_ROOT="${SECPROV_CP_CACHE:-${HOME:?HOME is not set}/.cache/secprov-controlplane}"
BIN_DIR="$CACHE_ROOT/$K8S_VERSION/$(build_key)"

BINARIES=(etcd kube-apiserver kube-controller-manager)
have_binaries() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
}

ensure_binaries() {
  if have_binaries; then
    return 0
  fi
  mkdir -p "$CACHE_ROOT/$K8S_VERSION"
  # Serialize concurrent builds of the same key.
  exec 8>"$BIN_DIR.lock"
  flock 8
  if ! have_binaries; then
    log "building kube-apiserver and kube-controller-manager $K8S_VERSION and etcd into $BIN_DIR (first time: several minutes)"
    local tmp start
    tmp="$(mktemp -d "$BIN_DIR.tmp.XXXXXX")"
    start=$SECONDS
    if ! build_binaries "$tmp"; then
      rm -rf "$tmp"
      die "go build failed"
    fi
    chmod 755 "$tmp"
    rm -rf "$BIN_DIR"
    mv "$tmp" "$BIN_DIR"
    log "built in $((SECONDS - start))s: $(du -sh "$BIN_DIR" | cut -f1)"
  fi
  flock -u 8
  exec 8>&-
}

if [[ "$1" == "--check-cache" ]]; then
  have_binaries
  exit
fi

ensure_binaries

if [[ "$1" == "--build-only" ]]; then
  echo "$BIN_DIR"
  exit 0
fi

# ---------------------------------------------------------------- start ----
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
KUBECONFIG_PATH="$DIR/kubeconfig"
DOWN="$SRC_DIR/down.sh"

# One up.sh/down.sh at a time per DIR.
exec 9>"$DIR/.lock"
flock 9

# pid_alive PIDFILE: the process in PIDFILE is alive and belongs to this DIR.
pid_alive() {
  local pid
  [[ -s "$1" ]] || return 1
  pid="$(cat "$1")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/"
}

readyz_ok() {
  [[ -s "$KUBECONFIG_PATH" ]] || return 1
  [[ "$(kubectl --kubeconfig "$KUBECONFIG_PATH" --request-timeout=5s get --raw /readyz 2>/dev/null)" == "ok" ]]
}

if pid_alive "$DIR/etcd.pid" && pid_alive "$DIR/apiserver.pid" &&
  pid_alive "$DIR/controller-manager.pid" && readyz_ok; then
  log "control plane already running in $DIR"
  echo "$KUBECONFIG_PATH"
  exit 0
fi

# Whatever is left over (a half-dead control plane) goes first.
if [[ -e "$DIR/etcd.pid" || -e "$DIR/apiserver.pid" || -e "$DIR/controller-manager.pid" ]]; then
  log "stale control plane state in $DIR: stopping it"
  SECPROV_CP_LOCKED=1 bash "$DOWN" "$DIR" >&2
fi

# ---- credentials (kept across restarts of the same DIR)
PKI="$DIR/pki"
mkdir -p "$PKI" "$DIR/certs"
chmod 700 "$PKI" "$DIR/certs"
if [[ ! -s "$PKI/sa.key" || ! -s "$PKI/sa.pub" ]]; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
for who in admin controller-manager; do
  if [[ ! -s "$PKI/$who.token" ]]; then
    openssl rand -hex 32 >"$PKI/$who.token"
  fi
done
ADMIN_TOKEN="$(cat "$PKI/admin.token")"
KCM_TOKEN="$(cat "$PKI/controller-manager.token")"
# token,user,uid,"group1,group2". The controller-manager runs every controller under
# its own identity (--use-service-account-credentials=false); the namespace and
# garbage-collector controllers delete objects of any type, custom resources included.
{
  printf '%s,admin,admin,"system:masters"\n' "$ADMIN_TOKEN"
  printf '%s,system:kube-controller-manager,kcm,"system:masters"\n' "$KCM_TOKEN"
} >"$PKI/tokens.csv"
chmod 600 "$PKI"/*

# ---- ports: four free loopback ports, chosen by the kernel
free_ports() {
  python3 - <<'EOF'
import socket
socks = []
for _ in range(4):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# wait_for DESC TIMEOUT PIDFILE CHECK...: poll CHECK until it succeeds; fail if the
# process dies or the time runs out.
wait_for() {
  local desc="$1" timeout="$2" pidfile="$3"; shift 3
  local deadline=$((SECONDS + timeout))
  while ! "$@"; do
    if ! pid_alive "$pidfile"; then
      log "$desc exited during start-up"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "$desc not ready after ${timeout}s"
      return 2
    fi
    sleep 0.2
  done
}

# wait_exec PID BINARY: wait until the forked child has exec'ed BINARY (before
# that, its /proc cmdline is still this script's).
wait_exec() {
  local i
  for ((i = 0; i < 100; i++)); do
    [[ "$(readlink "/proc/$1/exe" 2>/dev/null)" == "$2" ]] && return 0
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.05
  done
}

etcd_ready() { grep -q '^etcd ready' "$DIR/etcd.log" 2>/dev/null; }
serving_cert_written() { [[ -s "$DIR/certs/apiserver.crt" && -s "$DIR/certs/apiserver.key" ]]; }

fail() {
  local logfile="$1"
  log "last lines of $logfile:"
  tail -n 40 "$logfile" >&2 || true
  SECPROV_CP_LOCKED=1 bash "$DOWN" "$DIR" >&2 || true
}

write_kubeconfig() {
  local port="$1" ca="$DIR/certs/ca.crt"
  # --cert-dir makes the apiserver write apiserver.crt = serving cert followed by
  # the self-signed CA that issued it. Trust only the CA (the self-signed one).
  python3 - "$DIR/certs/apiserver.crt" "$ca" <<'EOF'
import re, subprocess, sys
pems = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?",
                  open(sys.argv[1]).read(), re.S)
def field(pem, what):
    return subprocess.run(["openssl", "x509", "-noout", "-" + what, "-nameopt", "RFC2253"],
                          input=pem, capture_output=True, text=True, check=True).stdout.split("=", 1)[1].strip()
roots = [p for p in pems if field(p, "subject") == field(p, "issuer")]
open(sys.argv[2], "w").write("".join(p if p.endswith("\n") else p + "\n" for p in (roots or pems)))
EOF
  [[ -s "$ca" ]] || return 1
  # (Called where set -e does not apply: check every step.)
  kubeconfig_for "$DIR/controller-manager.kubeconfig" "$port" "$ca" secprov-controller-manager "$KCM_TOKEN" &&
    kubeconfig_for "$KUBECONFIG_PATH" "$port" "$ca" secprov-admin "$ADMIN_TOKEN"
}

# kubeconfig_for PATH PORT CA USER TOKEN: a self-contained kubeconfig, written atomically.
kubeconfig_for() {
  local path="$1" port="$2" ca="$3" user="$4" token="$5" tmp="$1.tmp"
  rm -f "$tmp"
  kubectl config --kubeconfig "$tmp" set-cluster secprov \
    --server "https://127.0.0.1:$port" --certificate-authority "$ca" --embed-certs=true >/dev/null &&
    kubectl config --kubeconfig "$tmp" set-credentials "$user" --token "$token" >/dev/null &&
    kubectl config --kubeconfig "$tmp" set-context secprov --cluster secprov --user "$user" >/dev/null &&
    kubectl config --kubeconfig "$tmp" use-context secprov >/dev/null &&
    chmod 600 "$tmp" &&
    mv -f "$tmp" "$path"
}

kcm_healthy() {
  [[ "$(curl -sk --max-time 5 "https://127.0.0.1:$1/healthz" 2>/dev/null)" == ok ]]
}

start_once() {
  local etcd_client etcd_peer api_port kcm_port rc
  read -r etcd_client etcd_peer api_port kcm_port < <(free_ports)

  # Fresh etcd data every start: this control plane is for tests.
  rm -rf "$DIR/etcd-data" "$KUBECONFIG_PATH" "$DIR/controller-manager.kubeconfig" "$DIR/env" "$DIR/certs/apiserver.crt" "$DIR/certs/apiserver.key" "$DIR/certs/ca.crt"

  log "starting etcd on 127.0.0.1:$etcd_client"
  # Without job control a background job is not a process-group leader, so
  # setsid execs in place and $! is the server's own pid. Its own session keeps
  # it out of the caller's Ctrl-C / process-group kills.
  setsid "$BIN_DIR/etcd" \
    --data-dir "$DIR/etcd-data" \
    --listen-client-url "http://127.0.0.1:$etcd_client" \
    --listen-peer-url "http://127.0.0.1:$etcd_peer" \
    --unsafe-no-fsync \
    </dev/null >"$DIR/etcd.log" 2>&1 8>&- 9>&- &
  echo $! >"$DIR/etcd.pid"
  wait_exec $! "$BIN_DIR/etcd"
  wait_for etcd "$TIMEOUT" "$DIR/etcd.pid" etcd_ready || { rc=$?; fail "$DIR/etcd.log"; return $rc; }

  log "starting kube-apiserver $K8S_VERSION on https://127.0.0.1:$api_port"
  setsid "$BIN_DIR/kube-apiserver" \
    --advertise-address=127.0.0.1 \
    --bind-address=127.0.0.1 \
    --secure-port="$api_port" \
    --cert-dir="$DIR/certs" \
    --etcd-servers="http://127.0.0.1:$etcd_client" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --allow-privileged=true \
    --authorization-mode=RBAC \
    --token-auth-file="$PKI/tokens.csv" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --disable-admission-plugins=ServiceAccount \
    --endpoint-reconciler-type=none \
    --profiling=false \
    --v=1 \
    </dev/null >"$DIR/apiserver.log" 2>&1 8>&- 9>&- &
  echo $! >"$DIR/apiserver.pid"
  wait_exec $! "$BIN_DIR/kube-apiserver"

  wait_for kube-apiserver "$TIMEOUT" "$DIR/apiserver.pid" serving_cert_written || { rc=$?; fail "$DIR/apiserver.log"; return $rc; }
  write_kubeconfig "$api_port" || { log "cannot write $KUBECONFIG_PATH"; fail "$DIR/apiserver.log"; return 3; }
  wait_for kube-apiserver "$TIMEOUT" "$DIR/apiserver.pid" readyz_ok || { rc=$?; fail "$DIR/apiserver.log"; return $rc; }

  # Only the controllers that make deletion behave as on a real cluster: the namespace
  # controller empties and finalizes deleted namespaces, the garbage collector deletes
  # dependents by ownerReference, the serviceaccount controllers give each namespace its
  # `default` ServiceAccount and legacy token Secrets.
  log "starting kube-controller-manager $K8S_VERSION (healthz on https://127.0.0.1:$kcm_port)"
  mkdir -p "$DIR/controller-manager-certs"
  setsid "$BIN_DIR/kube-controller-manager" \
    --kubeconfig="$DIR/controller-manager.kubeconfig" \
    --controllers=namespace,garbagecollector,serviceaccount,serviceaccount-token \
    --use-service-account-credentials=false \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$DIR/certs/ca.crt" \
    --leader-elect=false \
    --bind-address=127.0.0.1 \
    --secure-port="$kcm_port" \
    --cert-dir="$DIR/controller-manager-certs" \
    --profiling=false \
    --v=1 \
    </dev/null >"$DIR/controller-manager.log" 2>&1 8>&- 9>&- &
  echo $! >"$DIR/controller-manager.pid"
  wait_exec $! "$BIN_DIR/kube-controller-manager"
  wait_for kube-controller-manager "$TIMEOUT" "$DIR/controller-manager.pid" kcm_healthy "$kcm_port" ||
    { rc=$?; fail "$DIR/controller-manager.log"; return $rc; }

  cat >"$DIR/env" <<EOF
KUBECONFIG=$KUBECONFIG_PATH
SECPROV_CP_APISERVER=https://127.0.0.1:$api_port
SECPROV_CP_ETCD=http://127.0.0.1:$etcd_client
SECPROV_CP_CONTROLLER_MANAGER=https://127.0.0.1:$kcm_port
SECPROV_CP_K8S_VERSION=$K8S_VERSION
EOF
}

start=$SECONDS
ok=false
# A port picked above can be taken by someone else before our server binds it;
# such a start fails fast, so try again with new ports.
# A timeout is not retried.
for attempt in 1 2 3; do
  rc=0
  start_once || rc=$?
  if ((rc == 0)); then ok=true; break; fi
  log "start attempt $attempt failed"
  ((rc == 1)) || break
done
$ok || die "could not start the control plane (logs in $DIR)"

[[ "$(kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz)" == "ok" ]] || die "readyz is not ok"
log "ready in $((SECONDS - start))s: kube-apiserver and kube-controller-manager $K8S_VERSION, state in $DIR"
echo "$KUBECONFIG_PATH"
