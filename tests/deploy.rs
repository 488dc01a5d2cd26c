//! The install manifests in deploy/ (and the Helm chart): static properties (least-privilege
//! RBAC, Pod Security `restricted`, resources, NetworkPolicy, CRD copies in step, no spec
//! defaults), then the documented install (docs/install.md) on the real API server:
//! `kubectl apply -k deploy/`, `kubectl auth can-i` as the operator's ServiceAccount,
//! PodSecurity admission judging the Pod template, and the real operator running with a
//! ServiceAccount token reconciling a provider to Ready.
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use secprov_sim::coveo::CoveoSimConfig;
use serde::Deserialize;
use serde_yaml::Value;
use support::*;

const OPERATOR_SA: &str = "system:serviceaccount:secprov-system:secprov-operator";

/// Every document of the YAML files that deploy/kustomization.yaml lists.
fn deploy_docs() -> Vec<Value> {
    let kustomization: Value =
        serde_yaml::from_str(&read("deploy/kustomization.yaml")).expect("kustomization.yaml");
    let mut docs = Vec::new();
    for resource in kustomization["resources"].as_sequence().expect("resources") {
        let path = format!("deploy/{}", resource.as_str().unwrap());
        for doc in serde_yaml::Deserializer::from_str(&read(&path)) {
            let value = Value::deserialize(doc).expect("valid YAML");
            if !value.is_null() {
                docs.push(value);
            }
        }
    }
    docs
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} missing from deploy/"))
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn rbac_is_least_privilege_without_wildcards() {
    let docs = deploy_docs();
    let mut rules = Vec::new();
    for kind in ["ClusterRole", "Role"] {
        for doc in docs.iter().filter(|d| d["kind"] == kind) {
            rules.extend(doc["rules"].as_sequence().unwrap().iter().cloned());
        }
    }
    let mut granted: BTreeSet<(String, String, String)> = BTreeSet::new();
    for rule in &rules {
        for field in ["apiGroups", "resources", "verbs"] {
            assert!(
                !strings(&rule[field]).contains("*"),
                "wildcard in {field}: {rule:?}"
            );
        }
        assert!(
            rule["nonResourceURLs"].is_null(),
            "no non-resource URLs needed"
        );
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    granted.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    let expected: BTreeSet<(String, String, String)> = [
        ("secprov.dev", "securityproviders", "get"),
        ("secprov.dev", "securityproviders", "list"),
        ("secprov.dev", "securityproviders", "watch"),
        ("secprov.dev", "securityproviders", "patch"),
        ("secprov.dev", "providerconnections", "get"),
        ("secprov.dev", "providerconnections", "list"),
        ("secprov.dev", "providerconnections", "watch"),
        ("secprov.dev", "providerconnections", "patch"),
        ("secprov.dev", "securityproviders/status", "patch"),
        ("secprov.dev", "providerconnections/status", "patch"),
        ("", "secrets", "get"),
        ("", "secrets", "patch"),
        ("", "secrets", "create"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "update"),
        // The claims (one Lease per managed remote provider, issue 21).
        ("coordination.k8s.io", "leases", "list"),
        ("coordination.k8s.io", "leases", "watch"),
        ("coordination.k8s.io", "leases", "delete"),
    ]
    .into_iter()
    .map(|(g, r, v)| (g.to_owned(), r.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(
        granted, expected,
        "RBAC grants differ from what the operator needs"
    );
    // Secrets: only in the credential-reader role, which no namespace binds by default.
    let operator = find(&docs, "ClusterRole", "secprov-operator");
    assert!(
        !serde_yaml::to_string(operator).unwrap().contains("secrets"),
        "the operator's ClusterRole names no Secrets: {operator:?}"
    );
    let reader = find(&docs, "ClusterRole", "secprov-credential-reader");
    assert_eq!(
        strings(&reader["rules"][0]["verbs"]),
        ["get".to_owned(), "patch".to_owned()].into()
    );
    assert!(
        !docs
            .iter()
            .any(|d| d["roleRef"]["name"] == "secprov-credential-reader"),
        "deploy/ binds the credential reader nowhere"
    );
    // Leases only in the operator's own namespace.
    let role = find(&docs, "Role", "secprov-operator-leader-election");
    assert_eq!(role["metadata"]["namespace"], "secprov-system");
    // The fingerprint key: get by name only; create (which resourceNames cannot limit) only in
    // the operator's own namespace, and in no other role.
    let key = find(&docs, "Role", "secprov-operator-fingerprint-key");
    assert_eq!(key["metadata"]["namespace"], "secprov-system");
    let rules = key["rules"].as_sequence().unwrap();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(strings(&rules[0]["verbs"]), ["get".to_owned()].into());
    assert_eq!(
        strings(&rules[0]["resourceNames"]),
        ["secprov-operator-fingerprint-key".to_owned()].into()
    );
    assert_eq!(strings(&rules[1]["verbs"]), ["create".to_owned()].into());
    let creates_secrets = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .filter(|d| {
            d["rules"].as_sequence().unwrap().iter().any(|r| {
                strings(&r["resources"]).contains("secrets")
                    && strings(&r["verbs"]).contains("create")
            })
        })
        .count();
    assert_eq!(creates_secrets, 1);
}

#[test]
fn deployment_meets_pod_security_restricted_with_limits_and_leader_election() {
    let docs = deploy_docs();
    let namespace = find(&docs, "Namespace", "secprov-system");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let deployment = find(&docs, "Deployment", "secprov-operator");
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "secprov-operator");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null());
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(
        strings(&sc["capabilities"]["drop"]),
        BTreeSet::from(["ALL".to_owned()])
    );
    assert!(sc["capabilities"]["add"].is_null());
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(sc["privileged"].is_null() || sc["privileged"] == false);
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource} missing"
            );
        }
    }
    let args = strings(&c["args"]);
    assert!(
        args.contains("run") && args.contains("--leader-election"),
        "{args:?}"
    );
    let env: BTreeSet<String> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(env.contains("POD_NAME") && env.contains("POD_NAMESPACE"));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
}

#[test]
fn network_policy_allows_only_metrics_in_and_dns_api_https_out() {
    let docs = deploy_docs();
    let policy = find(&docs, "NetworkPolicy", "secprov-operator");
    let spec = &policy["spec"];
    assert_eq!(
        strings(&spec["policyTypes"]),
        BTreeSet::from(["Ingress".to_owned(), "Egress".to_owned()])
    );
    let ports = |rules: &Value| -> BTreeSet<(u64, String)> {
        rules
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|r| r["ports"].as_sequence().cloned().unwrap_or_default())
            .map(|p| {
                (
                    p["port"].as_u64().unwrap(),
                    p["protocol"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        ports(&spec["ingress"]),
        BTreeSet::from([(8080, "TCP".to_owned())])
    );
    let egress = ports(&spec["egress"]);
    let allowed: BTreeSet<(u64, String)> = [(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")]
        .into_iter()
        .map(|(p, proto)| (p, proto.to_owned()))
        .collect();
    assert_eq!(egress, allowed);
    // HTTPS goes to the internet only: not to pod/service (private) ranges nor link-local.
    let https = spec["egress"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|r| r["ports"][0]["port"].as_u64() == Some(443))
        .expect("an HTTPS egress rule");
    let block = &https["to"][0]["ipBlock"];
    assert_eq!(block["cidr"], "0.0.0.0/0");
    let except = strings(&block["except"]);
    for range in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
    ] {
        assert!(
            except.contains(range),
            "HTTPS egress must exclude {range}: {except:?}"
        );
    }
    // Every ingress rule names ports: no rule opens every port.
    for rule in spec["ingress"].as_sequence().unwrap() {
        assert!(
            rule["ports"].is_sequence(),
            "ingress rule without ports: {rule:?}"
        );
    }
    for rule in spec["egress"].as_sequence().unwrap() {
        assert!(
            rule["ports"].is_sequence(),
            "egress rule without ports: {rule:?}"
        );
    }
}

#[test]
fn crd_copies_equal_crds_and_no_spec_field_has_a_default() {
    let crds = read("crds/secprov.dev.yaml");
    assert_eq!(
        read("deploy/crds/secprov.dev.yaml"),
        crds,
        "run `make crds`"
    );
    assert_eq!(
        read("deploy/helm/secprov-operator/crds/secprov.dev.yaml"),
        crds,
        "run `make crds`"
    );
    // Defaulting in the schema would rewrite spec on the server, and a GitOps tool would see a
    // diff it never made: defaults are applied by the operator instead.
    fn defaults(v: &Value, path: &str, found: &mut Vec<String>) {
        match v {
            Value::Mapping(m) => {
                for (k, child) in m {
                    let key = k.as_str().unwrap_or_default();
                    if key == "default" {
                        found.push(path.to_owned());
                    }
                    defaults(child, &format!("{path}.{key}"), found);
                }
            }
            Value::Sequence(s) => s.iter().for_each(|c| defaults(c, path, found)),
            _ => {}
        }
    }
    let mut checked = 0;
    for doc in serde_yaml::Deserializer::from_str(&crds) {
        let crd = Value::deserialize(doc).unwrap();
        for version in crd["spec"]["versions"].as_sequence().unwrap() {
            let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
            assert!(spec.is_mapping());
            let mut found = Vec::new();
            defaults(spec, "spec", &mut found);
            assert!(found.is_empty(), "defaults under spec: {found:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 2);
}

#[test]
fn helm_chart_has_the_same_rbac_and_pod_security_as_deploy() {
    // The templates, textually, where they must match deploy/ exactly (the rendered chart is
    // compared below).
    let chart = "deploy/helm/secprov-operator/templates";
    let rbac = read(&format!("{chart}/rbac.yaml"));
    for line in read("deploy/rbac.yaml").lines().map(str::trim).filter(|l| {
        l.starts_with("- apiGroups") || l.starts_with("resources:") || l.starts_with("verbs:")
    }) {
        assert!(rbac.contains(line), "chart rbac.yaml lacks {line:?}");
    }
    let deployment = read(&format!("{chart}/deployment.yaml"));
    for needle in [
        "allowPrivilegeEscalation: false",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "drop: [\"ALL\"]",
        "type: RuntimeDefault",
        "--leader-election",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            deployment.contains(needle),
            "chart deployment lacks {needle:?}"
        );
    }
    assert!(
        read(&format!("{chart}/networkpolicy.yaml"))
            .contains("policyTypes: [\"Ingress\", \"Egress\"]")
    );
}

// ---------------------------------------------------------------------------------------------
// On the real API server

/// `kubectl apply -k deploy/`, once per test process: tests run in parallel, and concurrent
/// first applies would race to create the same objects.
fn apply_deploy() {
    static APPLIED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut applied = APPLIED.lock().unwrap_or_else(|e| e.into_inner());
    if !*applied {
        let deploy = repo().join("deploy");
        kubectl(&["apply", "-k", deploy.to_str().unwrap()]).expect("kubectl apply -k deploy/");
        *applied = true;
    }
}

#[test]
fn kubectl_apply_k_installs_everything() {
    apply_deploy();
    for (resource, namespace) in [
        ("crd/securityproviders.secprov.dev", None),
        ("crd/providerconnections.secprov.dev", None),
        ("namespace/secprov-system", None),
        ("serviceaccount/secprov-operator", Some("secprov-system")),
        ("clusterrole/secprov-operator", None),
        ("clusterrolebinding/secprov-operator", None),
        ("clusterrole/secprov-credential-reader", None),
        (
            "role/secprov-operator-leader-election",
            Some("secprov-system"),
        ),
        (
            "rolebinding/secprov-operator-leader-election",
            Some("secprov-system"),
        ),
        (
            "role/secprov-operator-fingerprint-key",
            Some("secprov-system"),
        ),
        (
            "rolebinding/secprov-operator-fingerprint-key",
            Some("secprov-system"),
        ),
        ("deployment/secprov-operator", Some("secprov-system")),
        ("service/secprov-operator-metrics", Some("secprov-system")),
        ("networkpolicy/secprov-operator", Some("secprov-system")),
        (
            "poddisruptionbudget/secprov-operator",
            Some("secprov-system"),
        ),
    ] {
        let mut args = vec!["get", resource, "-o", "name"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        kubectl(&args).unwrap_or_else(|e| panic!("{resource} not installed: {e}"));
    }
    // Applying again changes nothing. kubectl reports the PodDisruptionBudget as "configured"
    // every time (its selector is patched with `$patch: replace`, a non-empty no-op patch), so
    // for it the proof is that the stored object did not change.
    let pdb_version = || {
        kubectl(&[
            "get",
            "pdb/secprov-operator",
            "-n",
            "secprov-system",
            "-o",
            "jsonpath={.metadata.resourceVersion}/{.metadata.generation}",
        ])
        .unwrap()
    };
    let before = pdb_version();
    let deploy = repo().join("deploy");
    let again = kubectl(&["apply", "-k", deploy.to_str().unwrap()]).unwrap();
    assert!(
        again.lines().all(|l| l.ends_with("unchanged")
            || l == "poddisruptionbudget.policy/secprov-operator configured"),
        "second apply changed something:\n{again}"
    );
    assert_eq!(
        pdb_version(),
        before,
        "the second apply rewrote the PodDisruptionBudget"
    );
}

fn can_i(verb: &str, resource: &str, namespace: &str) -> bool {
    can_i_in(verb, resource, &["-n", namespace])
}

/// `kubectl auth can-i` as the operator, with `scope` (`-n NS` or `--all-namespaces`).
fn can_i_in(verb: &str, resource: &str, scope: &[&str]) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (resource, None),
    };
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["auth", "can-i", verb, resource])
        .args(scope)
        .args(["--as", OPERATOR_SA]);
    if let Some(s) = subresource {
        cmd.arg(format!("--subresource={s}"));
    }
    let out = cmd.output().expect("kubectl auth can-i");
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[test]
fn service_account_can_do_exactly_what_the_operator_needs() {
    apply_deploy();
    let ns = "some-team";
    for (verb, resource) in [
        ("list", "securityproviders.secprov.dev"),
        ("watch", "securityproviders.secprov.dev"),
        ("patch", "securityproviders.secprov.dev"),
        ("patch", "securityproviders.secprov.dev/status"),
        ("watch", "providerconnections.secprov.dev"),
        ("patch", "providerconnections.secprov.dev"),
        ("patch", "providerconnections.secprov.dev/status"),
        ("create", "events.events.k8s.io"),
    ] {
        assert!(
            can_i(verb, resource, ns),
            "{OPERATOR_SA} cannot {verb} {resource}"
        );
    }
    for (verb, resource) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("delete", "secrets"),
        ("create", "secrets"),
        ("update", "secrets"),
        ("update", "securityproviders.secprov.dev"),
        ("delete", "securityproviders.secprov.dev"),
        ("create", "securityproviders.secprov.dev"),
        ("delete", "providerconnections.secprov.dev"),
        ("create", "pods"),
        ("get", "configmaps"),
        ("create", "leases.coordination.k8s.io"),
        ("create", "events"), // core/v1 events are not used
    ] {
        assert!(
            !can_i(verb, resource, ns),
            "{OPERATOR_SA} may {verb} {resource}"
        );
    }
    assert!(can_i(
        "create",
        "leases.coordination.k8s.io",
        "secprov-system"
    ));
    assert!(can_i(
        "update",
        "leases.coordination.k8s.io",
        "secprov-system"
    ));
    // Claims are released by deleting their Lease, in the operator's namespace only.
    assert!(can_i(
        "delete",
        "leases.coordination.k8s.io",
        "secprov-system"
    ));
    assert!(!can_i("delete", "leases.coordination.k8s.io", ns));
    // The fingerprint key and no other Secret of its namespace; created if absent, never
    // changed or deleted.
    let key = "secret/secprov-operator-fingerprint-key";
    assert!(can_i_named("get", key, "secprov-system"));
    assert!(can_i("create", "secrets", "secprov-system"));
    for (verb, resource) in [
        ("get", "secret/another-secret"),
        ("update", key),
        ("patch", key),
        ("delete", key),
    ] {
        assert!(
            !can_i_named(verb, resource, "secprov-system"),
            "{OPERATOR_SA} may {verb} {resource} in secprov-system"
        );
    }
    for verb in ["get", "list", "watch"] {
        assert!(!can_i(verb, "secrets", "secprov-system"), "{verb} secrets");
    }
}

/// `kubectl auth can-i VERB TYPE/NAME -n NAMESPACE` as the operator.
fn can_i_named(verb: &str, type_name: &str, namespace: &str) -> bool {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["auth", "can-i", verb, type_name, "-n", namespace])
        .args(["--as", OPERATOR_SA])
        .output()
        .expect("kubectl auth can-i");
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[test]
fn secrets_are_readable_only_by_name_and_only_where_a_namespace_granted_it() {
    apply_deploy();
    let team = "credential-team";
    let _ = kubectl(&["create", "namespace", team]);
    let _ = kubectl(&[
        "delete",
        "rolebinding",
        "secprov-credential-reader",
        "-n",
        team,
    ]);
    // The default install reads no Secret anywhere.
    assert!(!can_i_in("list", "secrets", &["--all-namespaces"]));
    assert!(!can_i_in("watch", "secrets", &["--all-namespaces"]));
    assert!(!can_i_in("get", "secrets", &["--all-namespaces"]));
    assert!(!can_i("get", "secrets", "kube-system"));
    assert!(!can_i("get", "secrets", team));
    // The grant the SecretAccessDenied condition names, run as it says.
    kubectl(&[
        "create",
        "rolebinding",
        "secprov-credential-reader",
        "-n",
        team,
        "--clusterrole=secprov-credential-reader",
        "--serviceaccount=secprov-system:secprov-operator",
    ])
    .unwrap();
    assert!(can_i("get", "secrets", team), "granted in {team}");
    assert!(can_i("patch", "secrets", team), "usage finalizer in {team}");
    for verb in ["list", "watch", "create", "update", "delete"] {
        assert!(!can_i(verb, "secrets", team), "{verb} secrets in {team}");
    }
    assert!(!can_i("get", "secrets", "kube-system"));
    assert!(!can_i_in("list", "secrets", &["--all-namespaces"]));
}

/// The Deployment's Pod template, as a Pod manifest in `namespace`.
fn pod_from_template(namespace: &str, name: &str) -> serde_json::Value {
    let docs = deploy_docs();
    let deployment = find(&docs, "Deployment", "secprov-operator");
    let template: serde_json::Value =
        serde_json::to_value(&deployment["spec"]["template"]).unwrap();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    })
}

#[test]
fn pod_security_admission_accepts_the_pod_and_rejects_a_weaker_one() {
    apply_deploy();
    let ns = "secprov-system";
    // Server-side dry run: PodSecurity admission (enforce=restricted on the namespace) judges
    // the Pod the Deployment would create.
    let pod = pod_from_template(ns, "psa-check");
    let out = run_kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &pod.to_string());
    assert!(
        out.0,
        "restricted PodSecurity rejected the operator Pod: {}",
        out.1
    );
    assert!(!out.1.contains("Warning"), "PodSecurity warned: {}", out.1);
    let deploy_dry_run = run_kubectl_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        &read("deploy/deployment.yaml"),
    );
    assert!(deploy_dry_run.0, "{}", deploy_dry_run.1);
    assert!(
        !deploy_dry_run.1.contains("violate"),
        "{}",
        deploy_dry_run.1
    );

    // Control: the same Pod allowed to escalate privileges is refused, so the check is real.
    let mut weaker = pod_from_template(ns, "psa-check-weak");
    weaker["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = true.into();
    let refused = run_kubectl_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        &weaker.to_string(),
    );
    assert!(
        !refused.0,
        "a Pod that may escalate privileges was admitted"
    );
    assert!(refused.1.contains("restricted"), "{}", refused.1);
}

fn run_kubectl_stdin(args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A kubeconfig that authenticates as the operator's ServiceAccount with a TokenRequest token.
fn service_account_kubeconfig(dir: &Path) -> std::path::PathBuf {
    let token = kubectl(&[
        "create",
        "token",
        "secprov-operator",
        "-n",
        "secprov-system",
        "--duration=1h",
    ])
    .expect("kubectl create token");
    let admin: Value =
        serde_yaml::from_str(&std::fs::read_to_string(kubeconfig()).unwrap()).unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cp", "cluster": {
            "server": cluster["server"].as_str().unwrap(),
            "certificate-authority-data": cluster["certificate-authority-data"].as_str().unwrap(),
        }}],
        "users": [{"name": "secprov-operator", "user": {"token": token.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "cp", "user": "secprov-operator"}}],
        "current-context": "sa",
    });
    let path = dir.join("sa.kubeconfig");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[test]
fn operator_with_the_service_account_token_reconciles_to_ready() {
    apply_deploy();
    let Env { ns, sim, rt: _rt } = Env::coveo(
        "deploy-rbac",
        CoveoSimConfig::new(COVEO_ORG, "deploy-rbac-key"),
    );
    ns.apply(&example("coveo/10-securityprovider.yaml", &sim.base_url()))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let sa_kubeconfig = service_account_kubeconfig(dir.path());
    // The identity really is the ServiceAccount, not admin.
    let whoami = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&sa_kubeconfig)
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&whoami.stdout), OPERATOR_SA);

    let log = repo().join(format!("target/e2e-logs/{}.log", ns.name));
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_secprov-operator"))
        .args([
            "run",
            "--namespace",
            &ns.name,
            "--leader-election",
            "--leader-election-namespace",
            "secprov-system",
            "--leader-election-id",
            &format!("secprov-operator-{}", ns.name),
            "--metrics-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--connection-check-interval",
            "2s",
        ])
        .env("KUBECONFIG", &sa_kubeconfig)
        // As in the Deployment: the operator's namespace holds its fingerprint key.
        .env("POD_NAMESPACE", "secprov-system")
        .env("RUST_LOG", "info,secprov=debug")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    // The namespace has not granted the operator its Secrets yet: a clear condition naming
    // the grant, on the connection and on the provider.
    let reason_of = |resource: &str| {
        let obj = ns.get_json(resource)?;
        let ready = condition(&obj, "Ready")?;
        Some((
            ready["reason"].as_str()?.to_owned(),
            ready["message"].as_str()?.to_owned(),
        ))
    };
    let (_, message) = eventually(Duration::from_secs(60), "SecretAccessDenied", || {
        reason_of("providerconnection/coveo").filter(|(r, _)| r == "SecretAccessDenied")
    });
    assert!(
        message.contains(&format!(
            "kubectl create rolebinding secprov-credential-reader -n {} --clusterrole=secprov-credential-reader",
            ns.name
        )),
        "{message}"
    );
    eventually(
        Duration::from_secs(60),
        "provider SecretAccessDenied",
        || {
            reason_of("securityprovider/push-source-provider")
                .filter(|(r, _)| r == "SecretAccessDenied")
        },
    );
    assert!(sim.provider("push-source-provider").is_none());
    // The grant, as the message says (the ServiceAccount name comes from the defaults, the
    // Deployment sets it through the downward API).
    ns.kubectl(&[
        "create",
        "rolebinding",
        "secprov-credential-reader",
        "--clusterrole=secprov-credential-reader",
        "--serviceaccount=secprov-system:secprov-operator",
    ])
    .unwrap();
    let ready = ns.wait_condition("securityprovider/push-source-provider", "Ready", "60s");
    let connection_ready = ns.wait_condition("providerconnection/coveo", "Ready", "30s");
    let _ = child.kill();
    let _ = child.wait();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    ready.unwrap_or_else(|e| panic!("{e}\noperator log:\n{log_text}"));
    connection_ready.unwrap_or_else(|e| panic!("{e}\noperator log:\n{log_text}"));
    assert!(sim.provider("push-source-provider").is_some());
    let forbidden: Vec<&str> = log_text
        .lines()
        .filter(|l| l.contains("Forbidden") || l.contains("forbidden"))
        .filter(|l| !l.contains("SecretAccessDenied") && !l.contains("may not read Secret"))
        .collect();
    assert!(
        forbidden.is_empty(),
        "the ServiceAccount lacked a permission:\n{forbidden:?}"
    );
    // The Created Event was written with the ServiceAccount's events.k8s.io grant.
    let events = ns.events_for("push-source-provider");
    assert!(
        events.iter().any(|(reason, _)| reason == "Created"),
        "{events:?}"
    );
    // It led through the Lease in secprov-system.
    let lease = kubectl(&[
        "get",
        "lease",
        &format!("secprov-operator-{}", ns.name),
        "-n",
        "secprov-system",
        "-o",
        "name",
    ]);
    assert!(lease.is_ok(), "{lease:?}");
}

/// `helm`: `SECPROV_HELM` (scripts/test.sh sets it), else the binary that
/// scripts/tools/build.sh builds from the Go module proxy (cached after the first build). A
/// machine without helm fails here instead of skipping the chart checks.
fn helm() -> String {
    static HELM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HELM.get_or_init(|| {
        let path = go_tool("helm", "SECPROV_HELM");
        let version = Command::new(&path).arg("version").output();
        assert!(
            version.as_ref().is_ok_and(|o| o.status.success()),
            "helm at {path:?} does not run: {version:?}"
        );
        path
    })
    .clone()
}

/// `helm template` of the chart as release `secprov` with `--include-crds` and `extra`
/// arguments.
fn helm_template(namespace: &str, extra: &[&str]) -> (String, Vec<Value>) {
    helm_template_release("secprov", namespace, extra)
}

/// `helm template` of the chart as `release` with `--include-crds` and `extra` arguments.
fn helm_template_release(release: &str, namespace: &str, extra: &[&str]) -> (String, Vec<Value>) {
    let chart = repo().join("deploy/helm/secprov-operator");
    let out = Command::new(helm())
        .args(["template", release])
        .arg(&chart)
        .args(["--namespace", namespace, "--include-crds"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let docs = serde_yaml::Deserializer::from_str(&rendered)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    (rendered, docs)
}

#[test]
fn helm_lint_is_clean() {
    let chart = repo().join("deploy/helm/secprov-operator");
    for values in [
        &[][..],
        &[
            "--set",
            "serviceMonitor.enabled=true,prometheusRule.enabled=true",
        ],
    ] {
        let out = Command::new(helm())
            .args(["lint", "--strict"])
            .arg(&chart)
            .args(values)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "helm lint {values:?}:\n{text}");
        assert!(
            !text.contains("[WARNING]") && !text.contains("[ERROR]"),
            "{text}"
        );
    }
}

#[test]
fn helm_chart_renders_the_same_objects_as_deploy_and_the_api_server_accepts_them() {
    let namespace = "secprov-helm";
    let (rendered, chart_docs) = helm_template(namespace, &[]);
    let deploy = deploy_docs();
    // The same kinds of objects as deploy/ but the Namespace, which Helm cannot create for the
    // release it installs into: the chart requires it labelled as deploy/'s (tests/
    // chart_runs_image.rs installs into one and is refused by one that is not).
    let kinds = |docs: &[Value]| -> Vec<String> {
        let mut k: Vec<String> = docs
            .iter()
            .map(|d| d["kind"].as_str().unwrap_or_default().to_owned())
            .filter(|k| k != "Namespace")
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        kinds(&chart_docs),
        kinds(&deploy),
        "chart objects differ from deploy/"
    );
    let kind = |docs: &[Value], k: &str| -> Value {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("{k} missing"))
            .clone()
    };
    for k in ["ClusterRole", "Role"] {
        let rules = |docs: &[Value]| -> Vec<Value> {
            docs.iter()
                .filter(|d| d["kind"] == k)
                .map(|d| d["rules"].clone())
                .collect()
        };
        assert_eq!(rules(&chart_docs), rules(&deploy), "{k} rules");
    }
    // No credential RoleBinding by default; one per listed namespace when asked. The
    // ClusterRole carries the release name, and the operator is told it (SecretAccessDenied
    // names it).
    let reader = "secprov-secprov-operator-credential-reader";
    assert!(
        chart_docs
            .iter()
            .any(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == reader)
    );
    assert!(
        strings(
            &kind(&chart_docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        )
        .contains(&format!("--credential-reader-role={reader}"))
    );
    let reader_bindings = |docs: &[Value]| -> Vec<String> {
        docs.iter()
            .filter(|d| d["kind"] == "RoleBinding")
            .filter(|d| d["roleRef"]["name"] == reader)
            .map(|d| d["metadata"]["namespace"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(reader_bindings(&chart_docs).is_empty());
    let (_, granted) = helm_template(
        namespace,
        &["--set", "credentialNamespaces={team-a,team-b}"],
    );
    assert_eq!(reader_bindings(&granted), ["team-a", "team-b"]);
    let binding = granted
        .iter()
        .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["namespace"] == "team-a")
        .unwrap();
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["subjects"][0]["name"], "secprov-operator");
    assert_eq!(binding["subjects"][0]["namespace"], namespace);
    let container = |docs: &[Value]| kind(docs, "Deployment")["spec"]["template"]["spec"].clone();
    let (chart_pod, deploy_pod) = (container(&chart_docs), container(&deploy));
    // Replicas spread over nodes, selecting the Deployment's own Pods.
    for (what, pod, docs) in [
        ("chart", &chart_pod, &chart_docs),
        ("deploy", &deploy_pod, &deploy),
    ] {
        let term = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0]["podAffinityTerm"];
        assert_eq!(
            term["topologyKey"], "kubernetes.io/hostname",
            "{what}: {pod:?}"
        );
        let selects = &term["labelSelector"]["matchLabels"];
        let pod_labels = &kind(docs, "Deployment")["spec"]["template"]["metadata"]["labels"];
        for (key, value) in selects.as_mapping().expect("matchLabels") {
            assert_eq!(
                &pod_labels[key], value,
                "{what}: anti-affinity selects its own Pods"
            );
        }
    }
    assert_eq!(chart_pod["securityContext"], deploy_pod["securityContext"]);
    for field in [
        "securityContext",
        "resources",
        "env",
        "ports",
        "livenessProbe",
        "readinessProbe",
    ] {
        assert_eq!(
            chart_pod["containers"][0][field], deploy_pod["containers"][0][field],
            "container {field}"
        );
    }
    // The PodDisruptionBudget keeps a standby during drains, in both.
    let pdb = |docs: &[Value]| kind(docs, "PodDisruptionBudget")["spec"].clone();
    assert_eq!(
        pdb(&chart_docs)["maxUnavailable"],
        pdb(&deploy)["maxUnavailable"]
    );
    assert_eq!(
        pdb(&chart_docs)["selector"]["matchLabels"],
        kind(&chart_docs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        pdb(&deploy)["selector"]["matchLabels"],
        kind(&deploy, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    let policy = |docs: &[Value]| kind(docs, "NetworkPolicy")["spec"].clone();
    assert_eq!(policy(&chart_docs)["ingress"], policy(&deploy)["ingress"]);
    assert_eq!(policy(&chart_docs)["egress"], policy(&deploy)["egress"]);

    // The API server (with PodSecurity enforcing restricted) accepts the rendered chart.
    let _ = kubectl(&["create", "namespace", namespace]);
    kubectl(&[
        "label",
        "namespace",
        namespace,
        "--overwrite",
        "pod-security.kubernetes.io/enforce=restricted",
    ])
    .unwrap();
    let (ok, output) = run_kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &rendered);
    assert!(ok, "{output}");
}

#[test]
fn helm_chart_monitoring_objects_are_those_of_deploy_monitoring() {
    let (_, off) = helm_template("secprov-helm", &[]);
    for kind in ["ServiceMonitor", "PrometheusRule", "ConfigMap"] {
        assert!(
            off.iter().all(|d| d["kind"] != kind),
            "{kind} rendered although switched off"
        );
    }
    let (_, docs) = helm_template(
        "secprov-helm",
        &[
            "--set",
            "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
            "--set",
            "serviceMonitor.labels.release=prometheus",
        ],
    );
    let kind = |k: &str| -> &Value {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("{k} missing"))
    };
    let rule: Value =
        serde_yaml::from_str(&read("deploy/monitoring/prometheusrule.yaml")).expect("YAML");
    assert_eq!(kind("PrometheusRule")["spec"], rule["spec"]);
    let monitor = kind("ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    // It selects the metrics Service by its labels and scrapes its named port.
    let service = kind("Service");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap();
    for (k, v) in selector {
        assert_eq!(&service["metadata"]["labels"][k], v, "Service label {k:?}");
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let dashboard = kind("ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: serde_json::Value =
        serde_json::from_str(dashboard["data"]["secprov-operator.json"].as_str().unwrap()).unwrap();
    let original: serde_json::Value =
        serde_json::from_str(&read("deploy/monitoring/grafana-dashboard.json")).unwrap();
    assert_eq!(json, original);
}

/// `(kind, namespace, name)` of every rendered object, CRDs left out: they are the API itself,
/// shared by design (Helm installs crds/ once and never replaces them).
fn object_names(docs: &[Value], release_namespace: &str) -> BTreeSet<(String, String, String)> {
    docs.iter()
        .filter(|d| d["kind"] != "CustomResourceDefinition")
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or_default().to_owned(),
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .filter(|(_, namespace, _)| namespace != release_namespace)
        .collect()
}

#[test]
fn two_releases_share_no_cluster_scoped_name_nor_a_team_namespace_binding() {
    let grant = ["--set", "credentialNamespaces={team-a}"];
    let (_, first) = helm_template_release("blue", "secprov-blue", &grant);
    let (_, second) = helm_template_release("green", "secprov-green", &grant);
    // Everything outside each release's own namespace: cluster-scoped objects (empty
    // namespace) and the credential RoleBinding in team-a.
    let (a, b) = (
        object_names(&first, "secprov-blue"),
        object_names(&second, "secprov-green"),
    );
    assert!(
        a.iter().any(|(kind, ..)| kind == "ClusterRole") && a.len() >= 4,
        "{a:?}"
    );
    let shared: Vec<_> = a.intersection(&b).collect();
    assert!(shared.is_empty(), "two releases collide on {shared:?}");
    for (kind, namespace, name) in &a {
        assert!(
            name.starts_with("blue-"),
            "{kind} {namespace}/{name} lacks the release name"
        );
    }
    // Each release's Deployment names its own credential reader, which its RoleBinding binds.
    let reader = |docs: &[Value]| {
        let args = strings(
            &docs.iter().find(|d| d["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"]["containers"]
                [0]["args"],
        );
        let role = args
            .iter()
            .find_map(|a| a.strip_prefix("--credential-reader-role="))
            .expect("--credential-reader-role")
            .to_owned();
        let bound = docs
            .iter()
            .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["namespace"] == "team-a")
            .unwrap();
        assert_eq!(bound["roleRef"]["name"].as_str(), Some(role.as_str()));
        role
    };
    assert_eq!(reader(&first), "blue-secprov-operator-credential-reader");
    assert_eq!(reader(&second), "green-secprov-operator-credential-reader");
    // A release named after the chart does not repeat it.
    let (_, plain) = helm_template_release("secprov-operator", "secprov-system", &[]);
    let roles: BTreeSet<String> = object_names(&plain, "secprov-system")
        .into_iter()
        .filter(|(kind, ..)| kind == "ClusterRole")
        .map(|(.., name)| name)
        .collect();
    assert_eq!(
        roles,
        BTreeSet::from([
            "secprov-operator".to_owned(),
            "secprov-operator-credential-reader".to_owned()
        ])
    );
}

/// The chart's NetworkPolicy egress rule for `port`.
fn egress_rule(docs: &[Value], port: u64) -> Value {
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .expect("a NetworkPolicy");
    policy["spec"]["egress"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|r| {
            r["ports"]
                .as_sequence()
                .is_some_and(|p| p.iter().any(|p| p["port"].as_u64() == Some(port)))
        })
        .unwrap_or_else(|| panic!("no egress rule for {port}"))
        .clone()
}

#[test]
fn helm_values_restrict_api_server_and_dns_egress_and_the_default_allows_any() {
    // Default: no peers on 53 and 6443, i.e. any address (documented in values.yaml).
    let (_, default) = helm_template("secprov-helm", &[]);
    assert!(egress_rule(&default, 53)["to"].is_null());
    assert!(egress_rule(&default, 6443)["to"].is_null());

    let (_, restricted) = helm_template(
        "secprov-helm",
        &[
            "--set",
            "networkPolicy.apiServer.cidrs={127.0.0.1/32,::1/128}",
            "--set",
            "networkPolicy.apiServer.ports={6443,8443}",
            "--set-json",
            r#"networkPolicy.dns.namespaceSelector={"kubernetes.io/metadata.name":"kube-system"}"#,
            "--set-json",
            r#"networkPolicy.dns.podSelector={"k8s-app":"kube-dns"}"#,
            "--set",
            "networkPolicy.dns.cidrs={127.0.0.1/32}",
        ],
    );
    let api = egress_rule(&restricted, 6443);
    let cidrs: Vec<&str> = api["to"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|peer| peer["ipBlock"]["cidr"].as_str().unwrap())
        .collect();
    assert_eq!(cidrs, ["127.0.0.1/32", "::1/128"]);
    let ports: Vec<u64> = api["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [6443, 8443]);
    let dns = egress_rule(&restricted, 53);
    let peers = dns["to"].as_sequence().unwrap();
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert_eq!(
        peers[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "kube-system"
    );
    assert_eq!(
        peers[0]["podSelector"]["matchLabels"]["k8s-app"],
        "kube-dns"
    );
    assert_eq!(peers[1]["ipBlock"]["cidr"], "127.0.0.1/32");
    // Only a pod selector: the DNS pods of any namespace, not of the release's namespace alone.
    let (_, pods_only) = helm_template(
        "secprov-helm",
        &[
            "--set-json",
            r#"networkPolicy.dns.podSelector={"k8s-app":"kube-dns"}"#,
        ],
    );
    let peer = &egress_rule(&pods_only, 53)["to"][0];
    assert!(
        peer["namespaceSelector"]["matchLabels"]
            .as_mapping()
            .is_some_and(|m| m.is_empty()),
        "{peer:?}"
    );
    // HTTPS is untouched by these values.
    assert_eq!(egress_rule(&restricted, 443), egress_rule(&default, 443));
    // The API server accepts the restricted policy.
    let policy = restricted
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .unwrap();
    let _ = kubectl(&["create", "namespace", "secprov-helm"]);
    let (ok, output) = run_kubectl_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        &serde_yaml::to_string(policy).unwrap(),
    );
    assert!(ok, "{output}");
}
