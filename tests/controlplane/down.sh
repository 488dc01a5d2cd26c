#!/usr/bin/env bash
# Stop the control plane that up.sh started in DIR: kube-controller-manager, then
# kube-apiserver, then etcd (SIGTERM, then SIGKILL after a timeout). Idempotent: fine when nothing runs.
#
#   down.sh DIR [--purge]   --purge also deletes DIR/etcd-data
#
# Environment: SECPROV_CP_STOP_TIMEOUT  seconds to wait after SIGTERM (default: 30)
set -euo pipefail

log() { printf 'controlplane: %s\n' "$*" >&2; }

[[ $# -ge 1 && $# -le 2 ]] || { echo "usage: $0 DIR [--purge]" >&2; exit 2; }
purge=false
if [[ $# -eq 2 ]]; then
  [[ "$2" == "--purge" ]] || { echo "usage: $0 DIR [--purge]" >&2; exit 2; }
  purge=true
fi
if [[ ! -d "$1" ]]; then
  log "$1 does not exist: nothing to stop"
  exit 0
fi
DIR="$(cd "$1" && pwd)"
STOP_TIMEOUT="${SECPROV_CP_STOP_TIMEOUT:-30}"

# up.sh holds the lock itself when it calls us.
if [[ -z "${SECPROV_CP_LOCKED:-}" ]]; then
  exec 9>"$DIR/.lock"
  flock 9
fi

# ours PID: alive (not a zombie) and started by up.sh for this DIR. Guards
# against pid reuse after a reboot or a crash.
ours() {
  kill -0 "$1" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$DIR/"
}

stop() {
  local name="$1" pidfile="$DIR/$1.pid" pid deadline
  if [[ ! -e "$pidfile" ]]; then
    return 0
  fi
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && ours "$pid"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while ours "$pid"; do
      if ((SECONDS >= deadline)); then
        log "$name did not stop after ${STOP_TIMEOUT}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
        break
      fi
      sleep 0.2
    done
    # A dead server stays a zombie until its parent (often init) reaps it;
    # give that a moment so that no trace is left when we return.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
  fi
  rm -f "$pidfile"
}

stop controller-manager
stop apiserver
stop etcd
rm -f "$DIR/env"
if $purge; then
  rm -rf "$DIR/etcd-data"
fi
log "stopped control plane in $DIR"
