#!/usr/bin/env bash
# `make demo`: builds everything, starts a real control plane, the remote API simulators and
# the operator, applies examples/, shows the reconciled status, and keeps running until
# Ctrl-C, then cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
STATE="$ROOT/target/demo"
CP_DIR="$ROOT/target/demo-controlplane"
BIN="$ROOT/target/debug/secprov-operator"
SIM="$ROOT/target/debug/secprov-sim"
mkdir -p "$STATE"

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "==> stopping the operator, the simulators and the control plane"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pkill -P $$ 2>/dev/null || true
  bash tests/controlplane/down.sh "$CP_DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> building secprov-operator and secprov-sim"
cargo build --locked --bin secprov-operator --bin secprov-sim

echo "==> starting the control plane (the first run builds kube-apiserver and etcd: ~6 minutes)"
KUBECONFIG="$(bash tests/controlplane/up.sh "$CP_DIR" | tail -n1)"
export KUBECONFIG
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd --all >/dev/null

# start_simulator NAME ARGS...: waits for the "listening on" line.
start_simulator() {
  local name="$1"; shift
  "$SIM" "$name" "$@" >"$STATE/simulator-$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    grep -q "listening on" "$STATE/simulator-$name.log" 2>/dev/null && { grep "listening on" "$STATE/simulator-$name.log"; return 0; }
    sleep 0.1
  done
  echo "simulator $name did not start:"; cat "$STATE/simulator-$name.log"; exit 1
}
echo "==> starting the simulators"
start_simulator coveo --listen 127.0.0.1:18089 --organization-id demo-org --api-key demo-api-key --refresh-duration 2s
start_simulator keystone --listen 127.0.0.1:18090 --user-name admin --password demo-password
start_simulator jitsudo --listen 127.0.0.1:18091 --tenant-id 2489e9ad-2ee2-4e00-8ec9-32d5f69181c0 --api-key demo-jitsudo-key --sync-duration 2s

echo "==> starting the operator (log: $STATE/operator.log)"
"$BIN" run --metrics-addr 127.0.0.1:18080 --resync-interval 30s --progress-interval 2s >"$STATE/operator.log" 2>&1 &
pids+=($!)

echo "==> kubectl apply -R -f examples/"
kubectl apply -R -f examples/
echo "==> waiting for every SecurityProvider to be Ready"
if ! kubectl wait --for=condition=Ready --timeout=120s securityprovider --all; then
  echo "not Ready in time; operator log:"; tail -n 40 "$STATE/operator.log"; exit 1
fi
sleep 3   # let the remote creation lifecycle settle into status
echo
kubectl get securityproviders,providerconnections
echo
echo "Explore further:"
echo "  kubectl --kubeconfig $KUBECONFIG get securityproviders -o yaml"
echo "  kubectl --kubeconfig $KUBECONFIG describe securityprovider push-source-provider"
echo "  curl -s 127.0.0.1:18080/metrics | grep secprov_"
echo
echo "Running; press Ctrl-C to stop and clean up."
# `wait` on a background sleep lets the INT/TERM trap run at once.
while true; do sleep 3600 & wait $!; done
