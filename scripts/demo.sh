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

# What a secured Push source does: push its security identities into the provider through the
# Push API (here with curl, to the simulator). Most users alias to the Email Security Provider;
# three alias to a directory that does not exist in the organization (their mapping is broken,
# so the refresh puts them IN_ERROR); one user left and is disabled.
push_identities() {
  local api="http://127.0.0.1:18089/push/v1/organizations/demo-org/providers/push-source-provider"
  local auth=(-H "Authorization: Bearer demo-api-key" -H "Content-Type: application/json")
  local i provider
  for i in $(seq -w 1 36); do
    provider="Email Security Provider"
    [[ "$i" == 07 || "$i" == 19 || "$i" == 28 ]] && provider="Legacy LDAP"
    curl -fsS -X PUT "${auth[@]}" "$api/mappings" -d "{\"identity\": {\"name\": \"user$i\", \"type\": \"USER\"},
      \"mappings\": [{\"name\": \"user$i@example.com\", \"type\": \"USER\", \"provider\": \"$provider\"}]}"
  done
  for group in engineering sales support finance; do
    curl -fsS -X PUT "${auth[@]}" "$api/permissions" -d "{\"identity\": {\"name\": \"$group\", \"type\": \"GROUP\"},
      \"members\": [{\"name\": \"user01\", \"type\": \"USER\"}, {\"name\": \"user02\", \"type\": \"USER\"}]}"
  done
  curl -fsS -X DELETE "${auth[@]}" "$api/permissions" -d '{"identity": {"name": "user36", "type": "USER"}}'
}
echo "==> pushing 40 security identities through the Push API (as a secured Push source would)"
push_identities
echo "==> requesting a refresh: kubectl annotate securityprovider push-source-provider secprov.dev/refresh-requested-at=..."
kubectl annotate --overwrite securityprovider push-source-provider \
  "secprov.dev/refresh-requested-at=$(date -u +%Y-%m-%dT%H:%M:%SZ)" >/dev/null
if ! kubectl wait --for=jsonpath='{.status.lastRefreshOperation.operationType}'=SECURITY_PROVIDER_REFRESH \
    --timeout=120s securityprovider push-source-provider >/dev/null; then
  echo "the refresh did not complete in time; operator log:"; tail -n 40 "$STATE/operator.log"; exit 1
fi
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
