//! Unit tests of the pure parts: configuration, diff, wire parsing, health.
use serde_json::json;

use super::*;
use crate::api::security_provider::JitsudoProviderSpec;
use crate::api::security_provider::JitsudoProviderType;
use crate::backend::RemoteHealth;
use crate::error::RemoteErrorKind;

#[test]
fn diff_names_changed_fields() {
    let spec = JitsudoProviderSpec {
        provider_type: JitsudoProviderType::Okta,
        config: Some(json!({"domain": "acme.okta.com"})),
        enabled: None,
    };
    let desired = JitsudoConfig::desired("okta-main", &spec);
    assert!(desired.enabled);
    assert_eq!(desired.provider_type, "okta");
    let mut observed = desired.clone();
    assert!(desired.diff(&observed).is_empty());
    observed.config = json!({"domain": "old.okta.com"});
    observed.enabled = false;
    assert_eq!(desired.diff(&observed), vec!["config", "enabled"]);
    observed = desired.clone();
    observed.name = "renamed".into();
    observed.provider_type = "github".into();
    assert_eq!(desired.diff(&observed), vec!["displayName", "providerType"]);
    let none = JitsudoConfig::desired(
        "x",
        &JitsudoProviderSpec {
            config: None,
            ..spec
        },
    );
    assert_eq!(none.config, json!({}));
    assert_eq!(
        none.update_body(),
        json!({"name": "x", "config": {}, "enabled": true})
    );
}

#[test]
fn seed_fields_parse_and_sync_status_drives_health() {
    let wire: ProviderWire = serde_json::from_str(
        r#"{"id":"0d5c7b1e-0000-4000-8000-000000000001","name":"aws","provider_type":"aws_identity_center","config":{},"enabled":true,"last_synced_at":null,"sync_status":"pending","sync_error":null,"created_at":"2026-11-23T10:00:00Z","updated_at":"2026-11-23T10:00:00Z","future":1}"#,
    )
    .unwrap();
    let observed = observed_from_wire(wire);
    assert!(matches!(
        observed.health,
        RemoteHealth::Progressing {
            reason: "SyncPending",
            ..
        }
    ));
    assert!(observed.state.busy);
    assert_eq!(
        observed.state.current_status.unwrap().status_type,
        "PENDING"
    );
    let status = observed.state.jitsudo.unwrap();
    assert_eq!(status.provider_type, "aws_identity_center");
    assert_eq!(status.last_synced_at, None);

    assert_eq!(
        health_of("failed", true, Some("okta: 401 invalid token")),
        RemoteHealth::Degraded {
            reason: "SyncFailed",
            message: "JITSudo sync failed: okta: 401 invalid token".into()
        }
    );
    assert!(matches!(
        health_of("syncing", false, None),
        RemoteHealth::Progressing { .. }
    ));
    assert_eq!(health_of("syncing", true, None), RemoteHealth::Healthy);
    assert_eq!(health_of("synced", true, None), RemoteHealth::Healthy);
    assert_eq!(
        health_of("something_new", false, None),
        RemoteHealth::Healthy
    );
}

#[test]
fn tenant_mismatch_names_the_wrong_header() {
    let headers = reqwest::header::HeaderMap::new();
    let e = parse_error(
        "list",
        403,
        &headers,
        br#"{"code":"tenant_mismatch","message":"credential tenant does not match X-Tenant-ID","notices":["deny-cross-tenant"]}"#,
    );
    assert_eq!(e.kind, RemoteErrorKind::Forbidden);
    assert!(e.kind.is_terminal());
    assert_eq!(e.code.as_deref(), Some(TENANT_MISMATCH));
    let text = e.to_string();
    assert!(text.contains("X-Tenant-ID"), "{text}");
    assert!(text.contains("spec.jitsudo.tenantId"), "{text}");
    assert!(text.contains("deny-cross-tenant"), "{text}");

    let e = parse_error(
        "list",
        401,
        &headers,
        br#"{"code":"unauthenticated","message":"missing or invalid X-API-Key"}"#,
    );
    assert_eq!(e.kind, RemoteErrorKind::Unauthorized);
    let e = parse_error(
        "create",
        400,
        &headers,
        br#"{"code":"invalid_input","message":"name is required","details":{"field":"name"}}"#,
    );
    assert_eq!(e.kind, RemoteErrorKind::InvalidConfiguration);
    let e = parse_error("get", 503, &headers, b"");
    assert_eq!(e.kind, RemoteErrorKind::Unavailable);
    assert!(e.message.contains("empty body"));
}

#[test]
fn observed_providers_survive_the_snapshot_encoding() {
    for (status, error) in [
        ("pending", "null"),
        ("failed", "\"bad issuer\""),
        ("syncing", "null"),
        ("synced", "null"),
    ] {
        let json = format!(
            r#"{{"id":"0d5c7b1e-0000-4000-8000-000000000001","name":"aws","provider_type":"okta","config":{{"issuer":"https://x","nested":{{"a":[1,2]}}}},"enabled":false,"last_synced_at":null,"sync_status":"{status}","sync_error":{error}}}"#
        );
        let wire: ProviderWire = serde_json::from_str(&json).unwrap();
        crate::backend::assert_survives_snapshot_encoding(&observed_from_wire(wire));
    }
}
