//! Manifests the tests and the benchmark apply beside the examples.

/// A SecurityProvider named `witness` whose connection points at a closed loopback port: it
/// fails with RemoteUnavailable and is retried with backoff (about 1, 2, 4 s ...), touching no
/// simulator. Its reconciles prove the operator was active while a test waits for something
/// not to happen to an object that is not reconciled again on its own (a terminal failure, a
/// paused object).
pub const WITNESS: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: witness-key
  labels: {secprov.dev/credential: "true"}
stringData:
  apiKey: witness-key-unused
---
apiVersion: secprov.dev/v1alpha1
kind: ProviderConnection
metadata:
  name: witness
spec:
  timeoutSeconds: 2
  coveo:
    organizationId: witness-org
    endpoint: http://127.0.0.1:9
    apiKeySecretRef: {name: witness-key, key: apiKey}
---
apiVersion: secprov.dev/v1alpha1
kind: SecurityProvider
metadata:
  name: witness
spec:
  connectionRef: witness
  coveo:
    referencedBy:
      - type: SOURCE
        id: witness-source
"#;

/// A SecurityProvider manifest: `name`, extra `metadata` lines (indented two spaces, each
/// ending in a newline; "" for none) and the `spec` lines (indented two spaces).
pub fn security_provider(name: &str, metadata: &str, spec: &str) -> String {
    format!(
        "apiVersion: secprov.dev/v1alpha1\nkind: SecurityProvider\nmetadata:\n  name: {name}\n{metadata}spec:\n{spec}"
    )
}

/// The spec of a Coveo provider on the connection `coveo`, shown as `display` and referenced
/// by the source `source-<name>`; `extra` spec lines (indented two spaces) go before `coveo`.
pub fn coveo_source_spec(name: &str, display: &str, extra: &str) -> String {
    format!(
        "  connectionRef: coveo\n  displayName: {display}\n{extra}  coveo:\n    referencedBy:\n      - type: SOURCE\n        id: source-{name}\n"
    )
}
