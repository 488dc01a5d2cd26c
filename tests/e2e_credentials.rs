//! Credentials only where they belong (issue 13, items 1, 3 (scrubbing) and 10): a Secret is
//! used only when it opted in with `secprov.dev/credential: "true"`, ServiceAccount tokens
//! never, a remote that echoes the key back cannot publish it, and a tenant id that is no UUID
//! is refused at apply time.
mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use serde_json::Value;
use support::*;

/// Distinctive, so any occurrence in an output is a leak.
const API_KEY: &str = "sk-ECHOCHECK-7d1e0c9a4b3f2e61";

fn connection(name: &str, endpoint: &str, secret: &str, key: &str) -> String {
    coveo_connection(name, "cred-org", endpoint, secret, key)
}

fn ready(ns: &TestNamespace, connection: &str) -> Option<(String, String, String)> {
    let obj = ns.get_json(&format!("providerconnection/{connection}"))?;
    let c = condition(&obj, "Ready")?;
    let field = |f: &str| c[f].as_str().unwrap_or_default().to_owned();
    Some((field("status"), field("reason"), field("message")))
}

fn wait_ready_reason(ns: &TestNamespace, op: &Operator, connection: &str, reason: &str) -> String {
    let resource = format!("providerconnection/{connection}");
    let obj = ns.wait_reason_logged(&resource, "Ready", reason, Duration::from_secs(90), op);
    condition(&obj, "Ready").unwrap()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A remote that answers every request with 401 and an error message quoting the API key it
/// received, verbatim and base64-encoded, as a careless or hostile endpoint might.
fn echoing_remote() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 8192];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.read(&mut request);
            let body = format!(
                r#"{{"errorCode":"INVALID_TOKEN","message":"the key {API_KEY} (Basic {}) is not valid"}}"#,
                base64_of(&format!("user:{API_KEY}"))
            );
            let _ = write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn base64_of(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

#[test]
fn only_opted_in_secrets_are_used_and_service_account_tokens_never() {
    let ns = TestNamespace::new("cred-optin");
    let endpoint = echoing_remote();
    let manifests = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: unlabelled}}
stringData: {{apiKey: {API_KEY}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: robot}}
---
apiVersion: v1
kind: Secret
metadata:
  name: robot-token
  labels: {{secprov.dev/credential: "true"}}
  annotations: {{kubernetes.io/service-account.name: robot}}
type: kubernetes.io/service-account-token
---
{}---
{}"#,
        connection("unlabelled", &endpoint, "unlabelled", "apiKey"),
        connection("sa-token", &endpoint, "robot-token", "token"),
    );
    ns.apply(&manifests).unwrap();
    let op = Operator::start(&ns.name, &["--connection-check-interval", "2s"]);
    let message = wait_ready_reason(&ns, &op, "unlabelled", "SecretNotOptedIn");
    assert!(
        message.contains(r#"secprov.dev/credential: "true""#)
            && message.contains("kubectl label secret unlabelled secprov.dev/credential=true"),
        "the condition names the label to add: {message}"
    );
    let message = wait_ready_reason(&ns, &op, "sa-token", "SecretTypeRefused");
    assert!(
        message.contains("kubernetes.io/service-account-token"),
        "{message}"
    );
    // Nothing was sent anywhere before the label: the echoing remote answers 401, and the
    // connection only reaches RemoteUnauthorized once the Secret opts in.
    ns.kubectl(&[
        "label",
        "secret",
        "unlabelled",
        "secprov.dev/credential=true",
    ])
    .unwrap();
    wait_ready_reason(&ns, &op, "unlabelled", "RemoteUnauthorized");
    assert_eq!(
        ready(&ns, "sa-token").map(|r| r.1).as_deref(),
        Some("SecretTypeRefused"),
        "a ServiceAccount token stays refused whatever its labels"
    );
    let warnings = ns.events_for("unlabelled");
    assert!(
        warnings
            .iter()
            .any(|(reason, _)| reason == "SecretNotOptedIn"),
        "a Warning Event with the reason: {warnings:?}"
    );
}

#[test]
fn remote_error_text_is_scrubbed_of_the_key() {
    let ns = TestNamespace::new("cred-scrub");
    let endpoint = echoing_remote();
    ns.apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: key
  labels: {{secprov.dev/credential: "true"}}
stringData: {{apiKey: {API_KEY}}}
---
{}"#,
        connection("echo", &endpoint, "key", "apiKey")
    ))
    .unwrap();
    let op = Operator::start_with_log(&ns.name, &[], "debug");
    let message = wait_ready_reason(&ns, &op, "echo", "RemoteUnauthorized");
    assert!(
        message.contains("[redacted]"),
        "the remote message is kept, minus the key: {message}"
    );
    eventually(Duration::from_secs(30), "the Warning Event", || {
        (!ns.events_for("echo").is_empty()).then_some(())
    });
    let encoded = base64_of(API_KEY);
    let basic = base64_of(&format!("user:{API_KEY}"));
    let outputs = [
        ns.kubectl(&["get", "providerconnection", "echo", "-o", "yaml"])
            .unwrap(),
        ns.kubectl(&["get", "events", "-o", "yaml"]).unwrap(),
        ns.kubectl(&["describe", "providerconnection", "echo"])
            .unwrap(),
        op.log_text(),
    ];
    for output in &outputs {
        assert!(!output.contains(API_KEY), "the key leaked:\n{output}");
        assert!(
            !output.contains(&encoded[..20]),
            "base64 of the key leaked:\n{output}"
        );
        // The middle of the Basic blob encodes only key bytes.
        assert!(
            !output.contains(&basic[8..28]),
            "the Basic blob leaked:\n{output}"
        );
    }
}

#[test]
fn a_tenant_id_that_is_no_uuid_is_refused_at_apply_time() {
    let ns = TestNamespace::new("cred-tenant");
    let manifest = |tenant: &str| {
        format!(
            r#"apiVersion: secprov.dev/v1alpha1
kind: ProviderConnection
metadata: {{name: js}}
spec:
  jitsudo:
    endpoint: https://api.jitsudo.io
    tenantId: "{tenant}"
    apiKeySecretRef: {{name: k, key: apiKey}}
"#
        )
    };
    for bad in [
        "not-a-uuid",
        "2489e9ad-2ee2-4e00-8ec9-32d5f69\r\nX-E",
        "2489e9ad-2ee2-4e00-8ec9-32d5f69181cz",
    ] {
        let err = ns.apply(&manifest(bad)).expect_err(bad);
        assert!(err.contains("tenantId must be a UUID"), "{bad}: {err}");
    }
    ns.apply(&manifest("2489e9ad-2ee2-4e00-8ec9-32d5f69181c0"))
        .unwrap();
    let obj: Value = ns.get_json("providerconnection/js").unwrap();
    assert_eq!(
        obj["spec"]["jitsudo"]["tenantId"],
        "2489e9ad-2ee2-4e00-8ec9-32d5f69181c0"
    );
}
