//! Unit tests of the pure parts: configuration, diff, wire parsing, health.
use std::collections::BTreeMap;

use super::*;
use crate::api::security_provider::{
    CoveoCascadingProvider, CoveoProviderType, CoveoReference, CoveoReferenceType,
};
use crate::api::security_provider::{CoveoProviderSpec, CurrentStatus};
use crate::backend::{ProviderConfig, RemoteHealth};
use crate::error::RemoteErrorKind;

/// The sample response of Coveo's "Get the status of a security identity provider" page.
pub const SEED_000_SAMPLE: &str = r#"{
  "id": "mypushsourcesecurityidentityprovider",
  "name": "mypushsourcesecurityidentityprovider",
  "displayName": "mypushsourcesecurityidentityprovider",
  "organizationClusterId": "mycoveocloudv2organization-x3xz5hehgtdarowotab2oekcwa",
  "type": "EXPANDED", "nodeRequired": false, "caseSensitive": false, "parameters": {},
  "cascadingSecurityProviders": {"Email Security Provider": {"id": "Email Security Provider", "name": "Email Security Provider", "type": "EMAIL"}},
  "referencedBy": [{"type": "SOURCE", "id": "mycoveocloudv2organization-rp5rxzbdz753uhndklv2ztkfgy",
    "attributes": {"id": "mycoveocloudv2organization-rp5rxzbdz753uhndklv2ztkfgy", "name": "MyPushSource", "sourceType": "PUSH", "crawlerInstanceType": "Push", "pushEnabled": true, "onPremisesEnabled": false}}],
  "statistics": {"numberOfEntitiesByState": {"UP_TO_DATE": 10, "DISABLED": 0, "NOT_UPDATED": 0, "OUT_OF_DATE": 0, "IN_ERROR": 0}, "numberOfEntitiesInError": 0, "totalNumberOfEntities": 10},
  "lastRefreshOperation": {"operationType": "SECURITY_CACHE_REFRESH", "timestamp": 1513008128699, "numberOfEntitiesProcessed": 10},
  "currentStatus": {"type": "IDLE"}
}"#;

fn seed_spec() -> CoveoProviderSpec {
    CoveoProviderSpec {
        provider_type: Some(CoveoProviderType::Expanded),
        node_required: Some(false),
        case_sensitive: None,
        parameters: BTreeMap::new(),
        referenced_by: vec![CoveoReference {
            reference_type: CoveoReferenceType::Source,
            id: "mycoveocloudv2organization-rp5rxzbdz753uhndklv2ztkfgy".into(),
        }],
        cascading_security_providers: vec![CoveoCascadingProvider {
            id: EMAIL_SECURITY_PROVIDER.into(),
            provider_type: CoveoProviderType::Email,
        }],
        ..Default::default()
    }
}

#[test]
fn seed_sample_parses_into_status_fields() {
    let wire: ProviderWire = serde_json::from_str(SEED_000_SAMPLE).unwrap();
    let observed = observed_from_wire(wire);
    assert_eq!(observed.remote_id, "mypushsourcesecurityidentityprovider");
    let stats = observed.state.statistics.unwrap();
    assert_eq!(stats.total_number_of_entities, 10);
    assert_eq!(
        stats.number_of_entities_by_state.get("UP_TO_DATE"),
        Some(10)
    );
    let op = observed.state.last_refresh_operation.unwrap();
    assert_eq!(op.timestamp.as_deref(), Some("2017-12-11T16:02:08.699Z"));
    assert_eq!(op.operation_type.as_deref(), Some("SECURITY_CACHE_REFRESH"));
    assert_eq!(op.number_of_entities_processed, Some(10));
    assert_eq!(observed.state.current_status.unwrap().status_type, "IDLE");
    assert_eq!(observed.health, RemoteHealth::Healthy);
}

#[test]
fn seed_sample_is_in_sync_with_the_equivalent_spec() {
    let desired = CoveoConfig::desired(
        "mypushsourcesecurityidentityprovider",
        "mypushsourcesecurityidentityprovider",
        &seed_spec(),
    );
    let observed = observed_from_wire(serde_json::from_str(SEED_000_SAMPLE).unwrap());
    let ProviderConfig::Coveo(observed) = observed.config else {
        panic!("a Coveo observation");
    };
    // Map key "Email Security Provider" vs our id-keyed request, attributes, statistics and
    // organizationClusterId must not count as differences.
    assert_eq!(desired.diff(&observed), Vec::<&str>::new());
}

#[test]
fn diff_names_each_changed_field() {
    let base = CoveoConfig::desired("p", "P", &seed_spec());
    let mut changed = base.clone();
    changed.display_name = "Other".into();
    changed.case_sensitive = true;
    changed.referenced_by.insert(("SOURCE".into(), "s2".into()));
    assert_eq!(
        changed.diff(&base),
        vec!["displayName", "caseSensitive", "referencedBy"]
    );
    let mut cascading = base.clone();
    cascading
        .cascading
        .insert(EMAIL_SECURITY_PROVIDER.into(), "SOMETHING_ELSE".into());
    assert!(
        cascading.diff(&base).is_empty(),
        "cascading providers are compared by id only"
    );
    cascading.cascading.clear();
    assert_eq!(cascading.diff(&base), vec!["cascadingSecurityProviders"]);
}

#[test]
fn sensitive_parameters_are_not_compared() {
    let json = r#"{"id":"p","parameters":{"a":{"value":"1","sensitive":false},"secret":{"value":"****","sensitive":true}}}"#;
    let observed = observed_from_wire(serde_json::from_str(json).unwrap());
    let ProviderConfig::Coveo(config) = observed.config else {
        panic!("a Coveo observation");
    };
    assert_eq!(
        config.parameters,
        BTreeMap::from([("a".to_string(), "1".to_string())])
    );
}

#[test]
fn timestamps_are_accepted_as_millis_or_date_time() {
    for (raw, expected) in [
        (r#"1513008128699"#, Some("2017-12-11T16:02:08.699Z")),
        (
            r#""2017-12-11T16:02:08.699Z""#,
            Some("2017-12-11T16:02:08.699Z"),
        ),
        (
            r#""2017-12-11T17:02:08.699+01:00""#,
            Some("2017-12-11T16:02:08.699Z"),
        ),
        (r#""2017-12-11T16:02:08""#, Some("2017-12-11T16:02:08Z")),
        (r#""1513008128699""#, Some("2017-12-11T16:02:08.699Z")),
        (r#""yesterday""#, None),
    ] {
        let ts: TimestampWire = serde_json::from_str(raw).unwrap();
        assert_eq!(ts.to_rfc3339().as_deref(), expected, "{raw}");
    }
}

#[test]
fn unknown_fields_and_enum_values_are_tolerated() {
    let json = r#"{"id":"p","type":"SOMETHING_NEW","futureField":{"x":1},"currentStatus":{"type":"WARMING_UP","extra":1}}"#;
    let observed = observed_from_wire(serde_json::from_str(json).unwrap());
    assert_eq!(
        observed.state.current_status.as_ref().unwrap().status_type,
        "WARMING_UP"
    );
    assert_eq!(observed.health, RemoteHealth::Healthy);
}

#[test]
fn error_bodies_give_code_message_and_kind() {
    let headers = reqwest::header::HeaderMap::new();
    let e = parse_error("create", 400, &headers, br#"{"errorCode":"SECURITY_PROVIDER_INVALID_CONFIGURATION","message":"Your security identity provider id is too long."}"#);
    assert_eq!(e.kind, RemoteErrorKind::InvalidConfiguration);
    assert_eq!(e.code.as_deref(), Some(INVALID_CONFIGURATION));
    assert_eq!(e.message, "Your security identity provider id is too long.");
    let e = parse_error(
        "get",
        403,
        &headers,
        br#"{"type":"ACCESS_DENIED","detail":"no privilege"}"#,
    );
    assert_eq!(
        (e.kind, e.code.as_deref(), e.message.as_str()),
        (
            RemoteErrorKind::Forbidden,
            Some("ACCESS_DENIED"),
            "no privilege"
        )
    );
    let e = parse_error(
        "get",
        401,
        &headers,
        br#"{"code":"INVALID_TOKEN","message":"expired"}"#,
    );
    assert_eq!(
        (e.kind, e.code.as_deref()),
        (RemoteErrorKind::Unauthorized, Some("INVALID_TOKEN"))
    );
    let e = parse_error(
        "get",
        502,
        &headers,
        b"<html><body>Bad gateway</body></html>",
    );
    assert_eq!(e.kind, RemoteErrorKind::Unavailable);
    assert!(e.message.contains("Bad gateway"), "{}", e.message);
    let mut waf = reqwest::header::HeaderMap::new();
    waf.insert("x-coveo-waf-action", "block".parse().unwrap());
    waf.insert("x-request-id", "req-9".parse().unwrap());
    let e = parse_error("get", 403, &waf, b"");
    assert!(e.message.contains("firewall"));
    assert_eq!(e.request_id.as_deref(), Some("req-9"));
}

#[test]
fn health_follows_current_status() {
    let status = |t: &str| CurrentStatus {
        status_type: t.into(),
        refresh_type: None,
    };
    assert!(matches!(
        health_of(Some(&status("ERROR"))),
        RemoteHealth::Degraded {
            reason: "RemoteError",
            ..
        }
    ));
    assert!(matches!(
        health_of(Some(&status("DISABLED"))),
        RemoteHealth::Degraded {
            reason: "RemoteSuspended",
            ..
        }
    ));
    assert!(matches!(
        health_of(Some(&status("CREATING"))),
        RemoteHealth::Progressing { .. }
    ));
    assert_eq!(
        health_of(Some(&status("REFRESHING"))),
        RemoteHealth::Healthy
    );
    assert!(is_refreshing(Some(&status("PENDING_REFRESH"))));
    assert!(!is_refreshing(Some(&status("IDLE"))));
}

#[test]
fn exported_spec_round_trips_to_the_same_configuration() {
    let observed = observed_from_wire(serde_json::from_str(SEED_000_SAMPLE).unwrap());
    let ProviderConfig::Coveo(config) = observed.config else {
        panic!("coveo config")
    };
    let spec = config.to_spec().unwrap();
    let again = CoveoConfig::desired(&config.id, &config.display_name, &spec);
    assert_eq!(again, config);
    assert_eq!(spec.node_required, None, "defaults are left out");
    let mut odd = config.clone();
    odd.provider_type = "FUTURE_TYPE".into();
    assert!(odd.to_spec().unwrap_err().contains("FUTURE_TYPE"));
}

#[test]
fn request_body_matches_the_documented_payload() {
    let config = CoveoConfig::desired("My Provider", "My Provider", &seed_spec());
    let body = serde_json::to_value(config.to_request()).unwrap();
    assert_eq!(body["id"], "My Provider");
    assert_eq!(body["type"], "EXPANDED");
    assert_eq!(body["nodeRequired"], false);
    assert_eq!(body["referencedBy"][0]["type"], "SOURCE");
    assert_eq!(
        body["cascadingSecurityProviders"][EMAIL_SECURITY_PROVIDER]["type"],
        "EMAIL"
    );
    assert_eq!(
        body["cascadingSecurityProviders"][EMAIL_SECURITY_PROVIDER]["id"],
        EMAIL_SECURITY_PROVIDER
    );
}

fn connector_spec() -> CoveoProviderSpec {
    serde_yaml::from_str(
        "type: DATABASE\nparameters: {DatabaseType: SQLSERVER}\n\
         sensitiveParameters: {ApiToken: {name: creds, key: token}}\n\
         userIdentities: {crawler: {userName: svc, passwordSecretRef: {name: creds, key: password}}}\n",
    )
    .unwrap()
}

fn material(token: &str) -> secrets::SecretMaterial {
    let mut m = secrets::SecretMaterial::default();
    m.insert("parameters.ApiToken".into(), token.into());
    m.insert("userIdentities.crawler".into(), "pw-1".into());
    m
}

/// What Coveo returns for the connector: every secret value masked.
fn masked_connector() -> CoveoConfig {
    let json = r#"{"id":"db","displayName":"db","type":"DATABASE",
        "parameters":{"DatabaseType":{"value":"SQLSERVER","sensitive":false},"ApiToken":{"value":"********","sensitive":true}},
        "userIdentities":{"crawler":{"name":"crawler","userName":"svc","password":"********"}}}"#;
    let ProviderConfig::Coveo(config) =
        observed_from_wire(serde_json::from_str(json).unwrap()).config
    else {
        panic!("a Coveo observation");
    };
    config
}

#[test]
fn secret_values_differ_only_when_their_hash_differs_from_the_recorded_one() {
    let mut desired = CoveoConfig::desired("db", "db", &connector_spec());
    desired.set_secrets(material("tok-1"), Some(&key(1)), "uid-1");
    let observed = masked_connector();
    // Never sent (nothing recorded): the values must be sent.
    assert_eq!(desired.diff(&observed), vec![SECRET_VALUES_FIELD]);
    // Sent: the masked read is in sync, whatever the mask.
    desired.recorded_secrets_hash = desired.secrets_hash.clone();
    assert!(desired.diff(&observed).is_empty());
    // Rotated: the hash moves, one field to update.
    let recorded = desired.secrets_hash.clone();
    desired.set_secrets(material("tok-2"), Some(&key(1)), "uid-1");
    assert_ne!(desired.secrets_hash, recorded);
    assert_eq!(desired.diff(&observed), vec![SECRET_VALUES_FIELD]);
    // Unresolved values (no Secrets read) compare nothing.
    let mut unresolved = CoveoConfig::desired("db", "db", &connector_spec());
    unresolved.recorded_secrets_hash = Some("hmac-sha256:00".into());
    assert!(unresolved.diff(&observed).is_empty());
    // A user name or a sensitive parameter removed remotely is a difference.
    let mut renamed = observed.clone();
    renamed
        .user_identities
        .insert("crawler".into(), "other".into());
    renamed.sensitive_parameters.clear();
    desired.recorded_secrets_hash = desired.secrets_hash.clone();
    assert_eq!(
        desired.diff(&renamed),
        vec!["sensitiveParameters", "userIdentities"]
    );
}

fn key(byte: u8) -> crate::fingerprint_key::FingerprintKey {
    crate::fingerprint_key::FingerprintKey::from_bytes(&[byte; crate::fingerprint_key::KEY_LEN])
        .unwrap()
}

/// One reconcile's view: the desired configuration under `key`, told what status recorded.
fn desired_under(key_byte: u8, recorded: Option<String>) -> CoveoConfig {
    let mut desired = CoveoConfig::desired("db", "db", &connector_spec());
    desired.set_secrets(material("tok-1"), Some(&key(key_byte)), "uid-1");
    desired.recorded_secrets_hash = recorded;
    desired
}

/// Reconciles until the secret values are in sync (recording what a write sends, as the
/// controller does), returning how many writes that took.
fn sends_until_in_sync(key_byte: u8, mut recorded: Option<String>) -> (u32, Option<String>) {
    let observed = masked_connector();
    let mut sends = 0;
    for _ in 0..5 {
        let desired = desired_under(key_byte, recorded.clone());
        if desired.diff(&observed).is_empty() {
            break;
        }
        sends += 1;
        recorded = desired.secrets_hash.clone();
    }
    (sends, recorded)
}

#[test]
fn a_rotated_fingerprint_key_resends_the_values_once_per_provider() {
    let (sends, under_old_key) = sends_until_in_sync(1, None);
    assert_eq!(sends, 1, "the first write sends them");
    assert_eq!(sends_until_in_sync(1, under_old_key.clone()).0, 0);
    // A new key: the recorded fingerprint names an unknown key id, so it counts as changed.
    let (sends, under_new_key) = sends_until_in_sync(2, under_old_key.clone());
    assert_eq!(sends, 1, "one re-send after the rotation");
    assert_ne!(under_new_key, under_old_key);
    assert!(under_new_key.as_deref().unwrap().contains(key(2).id()));
    assert_eq!(sends_until_in_sync(2, under_new_key).0, 0, "then quiet");
}

#[test]
fn a_uid_keyed_hash_of_earlier_versions_resends_the_values_once() {
    // What versions before issue 21 recorded: `hmac-sha256:<64 hex>`, keyed with the uid.
    let upgraded = Some(format!("hmac-sha256:{}", "ab".repeat(32)));
    let (sends, recorded) = sends_until_in_sync(1, upgraded);
    assert_eq!(sends, 1, "one re-send after the upgrade");
    assert!(
        recorded
            .as_deref()
            .unwrap()
            .starts_with(&format!("hmac-sha256:{}:", key(1).id()))
    );
    assert_eq!(sends_until_in_sync(1, recorded).0, 0);
}

#[test]
fn without_the_key_secret_values_are_read_but_not_compared() {
    let mut desired = CoveoConfig::desired("db", "db", &connector_spec());
    desired.set_secrets(material("tok-1"), None, "uid-1");
    desired.recorded_secrets_hash = Some(format!("hmac-sha256:{}", "ab".repeat(32)));
    assert_eq!(desired.secrets_hash, None);
    assert!(desired.diff(&masked_connector()).is_empty());
}

#[test]
fn the_request_carries_the_values_and_nothing_else_shows_them() {
    let mut desired = CoveoConfig::desired("db", "db", &connector_spec());
    desired.set_secrets(material("tok-LEAK"), Some(&key(1)), "uid-1");
    let body = serde_json::to_value(desired.to_request()).unwrap();
    assert_eq!(
        body["parameters"]["ApiToken"],
        serde_json::json!({"value": "tok-LEAK", "sensitive": true})
    );
    assert_eq!(
        body["parameters"]["DatabaseType"],
        serde_json::json!({"value": "SQLSERVER", "sensitive": false})
    );
    assert_eq!(
        body["userIdentities"]["crawler"],
        serde_json::json!({"name": "crawler", "userName": "svc", "password": "pw-1"})
    );
    for shown in [
        format!("{desired:?}"),
        format!("{:?}", desired.to_request()),
        serde_json::to_string(&desired).unwrap(),
    ] {
        assert!(
            !shown.contains("tok-LEAK") && !shown.contains("pw-1"),
            "{shown}"
        );
    }
    // Export cannot declare masked values: it says so instead of blanking them.
    let error = masked_connector().to_spec().unwrap_err();
    assert!(
        error.contains("ApiToken") && error.contains("crawler"),
        "{error}"
    );
}

#[test]
fn observed_providers_survive_the_snapshot_encoding() {
    let mut samples = vec![observed_from_wire(
        serde_json::from_str(SEED_000_SAMPLE).unwrap(),
    )];
    for status in ["ERROR", "CREATING", "PAUSED", "REFRESHING"] {
        let json = format!(
            r#"{{"id":"p","displayName":"P","type":"CUSTOM","nodeRequired":true,"caseSensitive":true,
                "parameters":{{"a":{{"value":"1","sensitive":false}},"s":{{"value":"****","sensitive":true}}}},
                "referencedBy":[{{"type":"SOURCE","id":"src-1"}}],
                "cascadingSecurityProviders":{{"Email Security Provider":{{"type":"EMAIL","name":"Email Security Provider"}}}},
                "currentStatus":{{"type":"{status}"}},
                "statistics":{{"numberOfEntitiesByState":{{"UP_TO_DATE":3,"IN_ERROR":1}},"numberOfEntitiesInError":1,"totalNumberOfEntities":4}}}}"#
        );
        samples.push(observed_from_wire(serde_json::from_str(&json).unwrap()));
    }
    assert!(samples.iter().any(|o| o.health != RemoteHealth::Healthy));
    samples
        .iter()
        .for_each(crate::backend::assert_survives_snapshot_encoding);
}
