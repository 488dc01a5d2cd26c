//! Unit tests of the pure parts: configuration, diff, wire parsing, health.
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::api::provider_connection::KeystoneScope;
use crate::api::security_provider::KeystoneProviderSpec;
use crate::backend::{ProviderConfig, RemoteHealth};
use crate::error::RemoteErrorKind;

fn spec() -> KeystoneProviderSpec {
    KeystoneProviderSpec {
        description: Some("Stores ACME identities".into()),
        enabled: None,
        remote_ids: vec!["https://idp.acme.example/saml".into()],
        authorization_ttl: Some(60),
        domain_id: Some("default".into()),
        protocols: Default::default(),
    }
}

/// Seed 004's sample response.
const SEED_004_SAMPLE: &str = r#"{
  "identity_provider": {
    "description": "Stores ACME identities", "enabled": false, "id": "ACME", "remote_ids": [],
    "links": {
      "protocols": "https://sample.domain.com/v3/OS-FEDERATION/identity_providers/ACME/protocols",
      "self": "https://sample.domain.com/v3/OS-FEDERATION/identity_providers/ACME"
    }
  }
}"#;

#[test]
fn seed_sample_parses_into_status_fields() {
    let one: OneWire = serde_json::from_str(SEED_004_SAMPLE).unwrap();
    let observed = observed_from_wire(one.identity_provider.unwrap());
    assert_eq!(observed.remote_id, "ACME");
    let status = observed.state.keystone.unwrap();
    assert!(!status.enabled);
    assert!(status.remote_ids.is_empty());
    assert_eq!(
        status.self_link.as_deref(),
        Some("https://sample.domain.com/v3/OS-FEDERATION/identity_providers/ACME")
    );
    assert!(status.protocols_link.unwrap().ends_with("/ACME/protocols"));
    assert_eq!(
        observed.state.current_status.unwrap().status_type,
        "DISABLED"
    );
    assert_eq!(observed.health, RemoteHealth::Healthy);
}

#[test]
fn diff_names_changed_fields_and_ignores_order_and_domain() {
    let desired = KeystoneConfig::desired("acme", &spec());
    assert!(desired.enabled, "enabled defaults to true here");
    let mut observed = desired.clone();
    observed.domain_id = Some("other".into());
    assert!(
        desired.diff(&observed).is_empty(),
        "domain_id is create-only"
    );
    observed.remote_ids.insert("b".into());
    observed.enabled = false;
    assert_eq!(desired.diff(&observed), vec!["enabled", "remoteIds"]);
    let mut described = desired.clone();
    described.description.clear();
    described.authorization_ttl = None;
    assert_eq!(
        desired.diff(&described),
        vec!["description", "authorizationTtl"]
    );
    // Remote ids in another order are equal.
    let mut a = desired.clone();
    a.remote_ids = ["x", "y"].iter().map(|s| s.to_string()).collect();
    let mut b = desired.clone();
    b.remote_ids = ["y", "x"].iter().map(|s| s.to_string()).collect();
    assert!(a.diff(&b).is_empty());
}

#[test]
fn patch_body_carries_only_changed_fields_and_never_domain_id() {
    let desired = KeystoneConfig::desired("acme", &spec());
    let mut observed = desired.clone();
    assert_eq!(desired.patch_body(&observed), None);
    observed.description = "old".into();
    let body = desired.patch_body(&observed).unwrap();
    assert_eq!(
        body,
        json!({"identity_provider": {"description": "Stores ACME identities"}})
    );
    let create = desired.create_body();
    assert_eq!(create["identity_provider"]["domain_id"], "default");
    assert_eq!(create["identity_provider"]["enabled"], true);
    assert_eq!(create["identity_provider"]["authorization_ttl"], 60);
    assert!(create["identity_provider"].get("id").is_none());
}

#[test]
fn both_error_shapes_are_parsed() {
    let headers = reqwest::header::HeaderMap::new();
    let e = parse_error(
        "create",
        409,
        &headers,
        br#"{"error":{"code":409,"title":"Conflict","message":"Duplicate remote ID: https://idp"}}"#,
    );
    assert_eq!(e.kind, RemoteErrorKind::Conflict);
    assert!(e.kind.is_terminal());
    assert_eq!(e.message, "Duplicate remote ID: https://idp");
    assert_eq!(e.code, None);
    let e = parse_error(
        "get",
        404,
        &headers,
        br#"{"error_code":"IAM.0004","error_msg":"Could not find Identity Provider: x."}"#,
    );
    assert_eq!(
        (e.kind, e.code.as_deref(), e.message.as_str()),
        (
            RemoteErrorKind::NotFound,
            Some("IAM.0004"),
            "Could not find Identity Provider: x."
        )
    );
    let e = parse_error(
        "create",
        400,
        &headers,
        br#"{"error":{"code":400,"title":"Bad Request","message":"Invalid input for field 'identity_provider': Additional properties are not allowed"}}"#,
    );
    assert_eq!(e.kind, RemoteErrorKind::InvalidConfiguration);
    assert!(e.to_string().contains("Additional properties"));
    let e = parse_error(
        "get",
        502,
        &headers,
        b"<html><body>Bad gateway</body></html>",
    );
    assert_eq!(e.kind, RemoteErrorKind::Unavailable);
    assert!(e.message.contains("Bad gateway"));
}

#[test]
fn iam_0012_and_429_are_rate_limiting() {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("retry-after", "3".parse().unwrap());
    // OTC may send IAM.0012 with a status other than 429; the code decides.
    for status in [429, 403] {
        let e = parse_error(
            "get",
            status,
            &headers,
            br#"{"error_code":"IAM.0012","error_msg":"The throttling threshold has been reached. Threshold: 10 times per 1 seconds"}"#,
        );
        assert_eq!(e.kind, RemoteErrorKind::RateLimited, "status {status}");
        assert!(!e.kind.is_terminal());
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
    }
    let e = parse_error(
        "get",
        429,
        &reqwest::header::HeaderMap::new(),
        br#"{"error":{"code":429,"title":"Too Many Requests","message":"slow down"}}"#,
    );
    assert_eq!(e.kind, RemoteErrorKind::RateLimited);
}

#[test]
fn auth_requests_carry_method_and_scope_and_debug_hides_secrets() {
    let password = KeystoneCredentials::Password {
        user_name: "admin".into(),
        user_domain_name: "Default".into(),
        password: "s3cr3t-pw".into(),
    };
    let scope = KeystoneScope {
        domain_name: Some("OTC00000000001000000xxx".into()),
        project_id: None,
        system: None,
    };
    let body = auth_request(&password, Some(&scope));
    assert_eq!(body["auth"]["identity"]["methods"][0], "password");
    assert_eq!(
        body["auth"]["identity"]["password"]["user"]["domain"]["name"],
        "Default"
    );
    assert_eq!(
        body["auth"]["scope"]["domain"]["name"],
        "OTC00000000001000000xxx"
    );
    let system = KeystoneScope {
        system: Some(true),
        ..Default::default()
    };
    assert_eq!(
        auth_request(&password, Some(&system))["auth"]["scope"],
        json!({"system": {"all": true}})
    );
    let app = KeystoneCredentials::ApplicationCredential {
        id: "ac-1".into(),
        secret: "app-secret".into(),
    };
    let body = auth_request(&app, Some(&scope));
    assert_eq!(
        body["auth"]["identity"]["application_credential"]["id"],
        "ac-1"
    );
    assert!(body["auth"].get("scope").is_none());
    assert!(!format!("{password:?}{app:?}").contains("s3cr3t-pw"));
    assert!(!format!("{app:?}").contains("app-secret"));
}

#[test]
fn tokens_are_replaced_a_minute_before_expiry() {
    let now: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
    let token = |expires: &str| CachedToken {
        value: "t".into(),
        expires_at: expires.parse().unwrap(),
    };
    assert!(token("2026-11-23T10:05:00Z").fresh(now));
    assert!(!token("2026-11-23T10:00:59Z").fresh(now));
    assert!(!token("2026-11-23T09:00:00Z").fresh(now));
}

#[test]
fn observed_providers_survive_the_snapshot_encoding() {
    let one: OneWire = serde_json::from_str(SEED_004_SAMPLE).unwrap();
    crate::backend::assert_survives_snapshot_encoding(&observed_from_wire(
        one.identity_provider.unwrap(),
    ));
}

fn federated_spec(rules: serde_json::Value, mapping_id: Option<&str>) -> KeystoneProviderSpec {
    let protocol = json!({"mapping": {"id": mapping_id, "rules": rules}});
    KeystoneProviderSpec {
        protocols: [(
            "saml2".to_owned(),
            serde_json::from_value(protocol).unwrap(),
        )]
        .into(),
        ..spec()
    }
}

fn admin_rules() -> serde_json::Value {
    json!([{"local": [{"user": {"name": "{0}"}}, {"group": {"id": "g1"}}],
            "remote": [{"type": "UserName"}, {"type": "Groups", "any_one_of": ["admins"]}]}])
}

#[test]
fn rules_compare_semantically_not_textually() {
    let a = federation::Rules::new(
        json!([{"local": [{"user": {"name": "{0}", "type": "local"}}], "remote": [{"type": "A", "n": 1}]}]),
    );
    let b: federation::Rules = serde_json::from_str(
        r#"[{"remote": [{"n": 1.0, "type": "A"}], "local": [{"user": {"type": "local", "name": "{0}"}}]}]"#,
    )
    .unwrap();
    assert_eq!(a, b, "key order and 1 vs 1.0 are the same rules");
    let c = federation::Rules::new(
        json!([{"local": [{"user": {"name": "{0}"}}], "remote": [{"type": "A", "n": 1.5}]}]),
    );
    assert_ne!(a, c);
    // Rule order is meaningful to Keystone (rules are evaluated in order).
    let two = json!([{"local": [{"user": {"name": "x"}}], "remote": [{"type": "A"}]},
                     {"local": [{"user": {"name": "y"}}], "remote": [{"type": "B"}]}]);
    let mut swapped = two.clone();
    swapped.as_array_mut().unwrap().reverse();
    assert_ne!(federation::Rules::new(two), federation::Rules::new(swapped));
}

#[test]
fn the_default_mapping_id_is_the_provider_and_protocol_and_fits_64() {
    assert_eq!(
        federation::default_mapping_id("acme", "saml2"),
        "acme-saml2"
    );
    let long = "p".repeat(60);
    let id = federation::default_mapping_id(&long, "openid");
    assert_eq!(id.chars().count(), 64);
    assert_eq!(
        id,
        federation::default_mapping_id(&long, "openid"),
        "deterministic"
    );
    assert_ne!(id, federation::default_mapping_id(&long, "saml2"));
    let desired = KeystoneConfig::desired("acme", &federated_spec(admin_rules(), None));
    let mapping = desired.protocols["saml2"].mapping.clone().unwrap();
    assert_eq!(mapping.id, "acme-saml2");
    let named = KeystoneConfig::desired("acme", &federated_spec(admin_rules(), Some("m1")));
    assert_eq!(named.protocols["saml2"].mapping_id.as_deref(), Some("m1"));
}

/// The observed configuration of a provider whose protocol `saml2` is bound to `bound` and
/// whose mapping `acme-saml2` has `rules` (None: missing).
fn observed_with(bound: Option<&str>, rules: Option<serde_json::Value>) -> KeystoneConfig {
    let mut observed = KeystoneConfig::desired("acme", &spec());
    let protocol = federation::ProtocolConfig {
        mapping_id: bound.map(str::to_owned),
        mapping: rules.map(|r| federation::MappingConfig {
            id: "acme-saml2".into(),
            rules: federation::Rules::new(r),
        }),
    };
    observed.protocols.insert("saml2".into(), protocol);
    observed
}

#[test]
fn the_diff_names_each_federation_part() {
    let desired = KeystoneConfig::desired("acme", &federated_spec(admin_rules(), None));
    let in_sync = observed_with(Some("acme-saml2"), Some(admin_rules()));
    assert!(desired.diff(&in_sync).is_empty());
    assert!(
        desired.patch_body(&in_sync).is_none(),
        "no identity provider write"
    );
    let missing = KeystoneConfig::desired("acme", &spec());
    assert_eq!(
        desired.diff(&missing),
        vec!["protocols.saml2.mapping", "protocols.saml2.mappingId"]
    );
    let edited = observed_with(
        Some("acme-saml2"),
        Some(json!([{"local": [{"user": {"name": "x"}}], "remote": [{"type": "A"}]}])),
    );
    assert_eq!(desired.diff(&edited), vec!["protocols.saml2.mapping"]);
    let repointed = observed_with(Some("other"), Some(admin_rules()));
    assert_eq!(desired.diff(&repointed), vec!["protocols.saml2.mappingId"]);
    // A protocol no longer declared is a difference only when this object declared it.
    let mut undeclared = KeystoneConfig::desired("acme", &spec());
    assert!(
        undeclared.diff(&in_sync).is_empty(),
        "a console protocol is left alone"
    );
    undeclared.record.managed_protocols.insert("saml2".into());
    assert_eq!(undeclared.diff(&in_sync), vec!["protocols.saml2"]);
    let mut stale = in_sync.clone();
    stale.stale_mappings.insert("old".into());
    assert_eq!(desired.diff(&stale), vec!["createdMappings.old"]);
}

#[test]
fn plan_shows_the_values_of_federation_parts() {
    let desired = ProviderConfig::Keystone(KeystoneConfig::desired(
        "acme",
        &federated_spec(admin_rules(), None),
    ));
    let observed = ProviderConfig::Keystone(observed_with(Some("other"), None));
    assert_eq!(
        desired.field_value("protocols.saml2.mappingId"),
        json!("acme-saml2")
    );
    assert_eq!(
        observed.field_value("protocols.saml2.mappingId"),
        json!("other")
    );
    assert_eq!(
        desired.field_value("protocols.saml2.mapping")["rules"][0]["remote"][0]["type"],
        "UserName"
    );
    assert_eq!(observed.field_value("protocols.saml2.mapping"), json!(null));
    assert_eq!(
        desired.field_value("description"),
        json!("Stores ACME identities")
    );
}

#[test]
fn export_writes_protocols_back_into_an_equal_spec() {
    let desired = KeystoneConfig::desired("acme", &federated_spec(admin_rules(), None));
    let exported = desired.to_spec();
    assert_eq!(
        exported.protocols["saml2"].mapping.id.as_deref(),
        Some("acme-saml2")
    );
    let again = KeystoneConfig::desired("acme", &exported);
    assert!(desired.diff(&again).is_empty());
}

#[test]
fn a_rule_index_is_read_from_keystone_validation_messages() {
    assert_eq!(
        federation::rule_index(
            "Invalid input for field 'rules/2/remote/0': 'type' is a required property"
        ),
        Some(2)
    );
    assert_eq!(
        federation::rule_index("'type' is a required property"),
        None
    );
}
