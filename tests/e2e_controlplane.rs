//! The local control plane deletes like a real cluster: kube-controller-manager's namespace
//! controller finishes `kubectl delete namespace`, and its garbage collector deletes
//! dependents by ownerReference, our custom resources included. (No operator runs here: these
//! check the ground the operator's deletion tests stand on.)
mod support;

use std::time::Duration;

use support::*;

/// The example Secret and ProviderConnection (pointing nowhere: no operator runs).
fn connection() -> String {
    example("coveo/00-connection.yaml", "http://127.0.0.1:9")
}

fn provider(name: &str, owner: Option<(&str, &str)>) -> String {
    let owner = owner
        .map(|(name, uid)| {
            format!(
                "  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: {name}, uid: {uid}}}\n"
            )
        })
        .unwrap_or_default();
    security_provider(name, &owner, &coveo_source_spec(name, name, ""))
}

#[test]
fn deleting_a_namespace_completes() {
    let ns = TestNamespace::new("cp-nsdelete");
    ns.apply(&connection()).unwrap();
    ns.apply(&provider("doomed", None)).unwrap();
    kubectl(&["delete", "namespace", &ns.name, "--timeout=60s"])
        .unwrap_or_else(|e| panic!("namespace deletion did not complete: {e}"));
    let gone = kubectl(&["get", "namespace", &ns.name]).unwrap_err();
    assert!(gone.contains("NotFound"), "{gone}");
}

#[test]
fn dependents_are_garbage_collected_when_their_owner_goes() {
    let ns = TestNamespace::new("cp-gc");
    ns.kubectl(&["create", "configmap", "owner", "--from-literal=a=b"])
        .unwrap();
    let uid = ns
        .kubectl(&[
            "get",
            "configmap",
            "owner",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .unwrap();
    ns.apply(&connection()).unwrap();
    ns.apply(&provider("owned", Some(("owner", &uid)))).unwrap();
    ns.apply(&provider("independent", None)).unwrap();
    ns.kubectl(&["delete", "configmap", "owner"]).unwrap();
    eventually(Duration::from_secs(60), "the dependent deleted", || {
        ns.get_json("securityprovider/owned")
            .is_none()
            .then_some(())
    });
    assert!(
        ns.get_json("securityprovider/independent").is_some(),
        "an object without the ownerReference stays"
    );
    kubectl(&["delete", "namespace", &ns.name, "--wait=false"]).unwrap();
}
