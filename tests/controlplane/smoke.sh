#!/usr/bin/env bash
# Smoke test of the control plane: up.sh on a temporary DIR, a few API checks
# (CRD with status subresource and a CEL rule, Secret, Lease, RBAC, TokenRequest,
# and what kube-controller-manager adds: namespace deletion that completes, ownerReference
# garbage collection, default ServiceAccounts), then down.sh. Prints "N passed, N failed" at the end; exit code 1 on failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="$(mktemp -d "${TMPDIR:-/tmp}/secprov-cp-smoke.XXXXXX")"
trap 'bash "$HERE/down.sh" "$DIR" --purge 2>/dev/null || true; rm -rf "$DIR"' EXIT

KC="$(bash "$HERE/up.sh" "$DIR" | tail -n 1)"
k() { kubectl --kubeconfig "$KC" "$@"; }

passed=0 failed=0
check() { # check NAME CMD...
  local name="$1"; shift
  if "$@" >/dev/null 2>&1; then passed=$((passed + 1)); echo "ok   $name"
  else failed=$((failed + 1)); echo "FAIL $name"; fi
}

readyz() { [[ "$(k get --raw /readyz)" == ok ]]; }
admin_all() { [[ "$(k auth can-i '*' '*')" == yes ]]; }
crd() {
  k apply -f - <<'YAML' && k wait --for condition=Established crd/widgets.smoke.secprov.dev --timeout=30s
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.secprov.dev}
spec:
  group: smoke.secprov.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - {rule: "self.min <= self.max", message: "min must not exceed max"}
            properties: {min: {type: integer}, max: {type: integer}}
          status:
            type: object
            properties: {phase: {type: string}}
YAML
}
widget() { printf 'apiVersion: smoke.secprov.dev/v1\nkind: Widget\nmetadata: {name: %s, namespace: default}\nspec: {min: %s, max: %s}\n' "$@"; }
cr_valid() { widget good 1 2 | k apply -f -; }
cr_cel_rejected() {
  local out
  if out="$(widget bad 3 2 | k apply -f - 2>&1)"; then return 1; fi
  grep -q 'min must not exceed max' <<<"$out"
}
cr_status() {
  k patch widget good --subresource=status --type=merge -p '{"status":{"phase":"Ready"}}' &&
    [[ "$(k get widget good -o jsonpath='{.status.phase}')" == Ready ]]
}
secret() { k create secret generic x --from-literal=a=b && [[ "$(k get secret x -o jsonpath='{.data.a}')" == "$(printf b | base64)" ]]; }
lease() {
  printf 'apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: smoke, namespace: default}\nspec: {holderIdentity: a, leaseDurationSeconds: 15}\n' | k apply -f - &&
    [[ "$(k get lease smoke -o jsonpath='{.spec.holderIdentity}')" == a ]]
}
sa_token_rbac() {
  local t
  k create serviceaccount op && t="$(k create token op)" &&
    [[ "$(k --token "$t" auth whoami -o jsonpath='{.status.userInfo.username}')" == system:serviceaccount:default:op ]] &&
    ! k --token "$t" get secrets
}

# Deleting a namespace that holds a custom resource, a Secret and a ConfigMap completes
# (the namespace controller empties it, then removes the finalizer).
ns_delete() {
  k create namespace doomed &&
    widget w 1 2 | sed 's/namespace: default/namespace: doomed/' | k apply -f - &&
    k -n doomed create secret generic s --from-literal=a=b &&
    k -n doomed create configmap c --from-literal=a=b &&
    k delete namespace doomed --timeout=60s &&
    ! k get namespace doomed
}
# A dependent whose owner is deleted is garbage-collected (background propagation), a
# custom resource included.
owner_gc() {
  local uid
  k create configmap owner --from-literal=a=b &&
    uid="$(k get configmap owner -o jsonpath='{.metadata.uid}')" &&
    printf 'apiVersion: smoke.secprov.dev/v1\nkind: Widget\nmetadata:\n  name: owned\n  namespace: default\n  ownerReferences:\n  - {apiVersion: v1, kind: ConfigMap, name: owner, uid: %s}\nspec: {min: 1, max: 2}\n' "$uid" |
      k apply -f - &&
    k delete configmap owner &&
    k wait --for=delete widget/owned --timeout=60s
}
default_sa() {
  k create namespace fresh && k -n fresh wait --for=create serviceaccount/default --timeout=30s
}

check "readyz ok" readyz
check "admin can-i * *" admin_all
check "CRD established" crd
check "valid CR accepted" cr_valid
check "CEL rule rejects invalid CR" cr_cel_rejected
check "status subresource" cr_status
check "Secret" secret
check "Lease" lease
check "ServiceAccount token + RBAC deny" sa_token_rbac
check "namespace deletion completes" ns_delete
check "ownerReference garbage collection" owner_gc
check "default ServiceAccount in a new namespace" default_sa

echo "$passed passed, $failed failed"
((failed == 0))
