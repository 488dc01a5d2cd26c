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

/// Standard base64 (with padding), as Kubernetes shows Secret data: what a leak check looks for
/// besides the plain value.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Leader election with short timings (a lease of 3 s, renewed within 2 s, retried every
/// 500 ms), so that a takeover happens within seconds; the Lease lives in `namespace`.
pub fn fast_leader_election(namespace: &str) -> Vec<String> {
    [
        "--leader-election",
        "--leader-election-namespace",
        namespace,
        "--leader-election-lease-duration",
        "3s",
        "--leader-election-renew-deadline",
        "2s",
        "--leader-election-retry-period",
        "500ms",
    ]
    .map(String::from)
    .to_vec()
}

/// A Coveo ProviderConnection `name` to organization `org` at `endpoint`, its API key under
/// `key` in the Secret `secret`, with a 2 s timeout (a dead endpoint fails fast).
pub fn coveo_connection(name: &str, org: &str, endpoint: &str, secret: &str, key: &str) -> String {
    format!(
        "apiVersion: secprov.dev/v1alpha1\nkind: ProviderConnection\nmetadata:\n  name: {name}\nspec:\n  timeoutSeconds: 2\n  coveo:\n    organizationId: {org}\n    endpoint: {endpoint}\n    apiKeySecretRef: {{name: {secret}, key: {key}}}\n"
    )
}
