//! Keystone federation declared with the identity provider (pure): each protocol
//! (`/identity_providers/{idp}/protocols/{protocol}`) bound to a mapping
//! (`/mappings/{id}`), their normalized form, the default mapping id, what this object may do
//! to a mapping, and the diff per part.
//!
//! Mappings carry only `id` and `rules`, so no evidence of who created one can be left on it.
//! The evidence is kept in this object's status instead (`status.keystone.createdMappings`):
//! a mapping is written when it is listed there, when `spec.adopt` is set, or when this
//! object's own identity provider already has a protocol bound to it; it is deleted only when
//! listed there. A protocol removed from the spec is deleted only when
//! `status.keystone.managedProtocols` lists it, so protocols added in the console are left
//! alone.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::api::security_provider::{KeystoneMappingRule, KeystoneProtocolSpec, SecurityProvider};

/// Longest mapping id Keystone stores (`mapping.id` is `String(64)`).
pub const MAX_MAPPING_ID_LEN: usize = 64;

/// Mapping rules in canonical form: object keys sorted, integral numbers as integers, so that
/// key order and number formatting never count as a difference.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(from = "Value", into = "Value")]
pub struct Rules(Value);

impl Rules {
    /// `value` in canonical form.
    pub fn new(value: Value) -> Rules {
        Rules(canonical(value))
    }

    /// The rules of a spec.
    pub fn from_spec(rules: &[KeystoneMappingRule]) -> Rules {
        Rules::new(serde_json::to_value(rules).unwrap_or(Value::Null))
    }

    /// The rules as sent to Keystone.
    pub fn value(&self) -> &Value {
        &self.0
    }

    /// The spec rules that declare exactly these rules (for `export`); rules that do not fit
    /// the spec's shape are left out.
    pub fn to_spec(&self) -> Vec<KeystoneMappingRule> {
        serde_json::from_value(self.0.clone()).unwrap_or_default()
    }
}

impl From<Value> for Rules {
    fn from(value: Value) -> Rules {
        Rules::new(value)
    }
}

impl From<Rules> for Value {
    fn from(rules: Rules) -> Value {
        rules.0
    }
}

/// `value` with object keys sorted and integral floats (`1.0`, `1e2`) as integers.
pub fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut sorted: Vec<(String, Value)> = map.into_iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect::<Map<String, Value>>(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        Value::Number(n) if n.as_i64().is_none() && n.as_u64().is_none() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        other => other,
    }
}

/// One mapping: its id and rules.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MappingConfig {
    pub id: String,
    pub rules: Rules,
}

/// One protocol and its mapping. Desired: both set. Observed: `mapping_id` is what the
/// protocol is bound to (None: no such protocol); `mapping` is the mapping read under the
/// desired id (None: it does not exist).
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<MappingConfig>,
}

/// What status records of this object's federation, and what the spec allows: never compared,
/// never sent; it decides which mappings may be written or deleted.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FederationRecord {
    /// `spec.adopt`: an existing mapping under a desired id may be taken over.
    pub adopt: bool,
    /// Mappings this object created (`status.keystone.createdMappings`).
    pub created_mappings: BTreeSet<String>,
    /// Protocols this object declared (`status.keystone.managedProtocols`).
    pub managed_protocols: BTreeSet<String>,
}

impl FederationRecord {
    /// The record of `sp`: its status and `spec.adopt`.
    pub fn of(sp: &SecurityProvider) -> FederationRecord {
        let status = sp.status.as_ref().and_then(|s| s.keystone.as_ref());
        FederationRecord {
            adopt: sp.spec.adopt == Some(true),
            created_mappings: status
                .map(|s| s.created_mappings.iter().cloned().collect())
                .unwrap_or_default(),
            managed_protocols: status
                .map(|s| s.managed_protocols.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// The mapping id of protocol `protocol` of identity provider `idp` when the spec sets none:
/// `<idp>-<protocol>`, or when that is longer than 64 characters its first 55 characters,
/// `-` and the first 8 hex digits of its SHA-256 (so two long ids still differ).
pub fn default_mapping_id(idp: &str, protocol: &str) -> String {
    let full = format!("{idp}-{protocol}");
    if full.chars().count() <= MAX_MAPPING_ID_LEN {
        return full;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, full.as_bytes());
    let hex: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let head: String = full.chars().take(MAX_MAPPING_ID_LEN - 9).collect();
    format!("{head}-{hex}")
}

/// The desired protocols of a spec.
pub fn desired_protocols(
    idp: &str,
    protocols: &BTreeMap<String, KeystoneProtocolSpec>,
) -> BTreeMap<String, ProtocolConfig> {
    protocols
        .iter()
        .map(|(protocol, spec)| {
            let id = spec
                .mapping
                .id
                .clone()
                .unwrap_or_else(|| default_mapping_id(idp, protocol));
            let mapping = MappingConfig {
                id: id.clone(),
                rules: Rules::from_spec(&spec.mapping.rules),
            };
            let config = ProtocolConfig {
                mapping_id: Some(id),
                mapping: Some(mapping),
            };
            (protocol.clone(), config)
        })
        .collect()
}

/// The parts that differ, `desired` against `observed`, named after the spec:
/// `protocols.<id>.mapping` (the mapping is missing or its rules differ),
/// `protocols.<id>.mappingId` (the protocol is missing or bound to another mapping),
/// `protocols.<id>` (a protocol this object declared before is no longer declared), and
/// `createdMappings.<id>` (a mapping this object created is no longer used by the spec).
pub fn diff(
    desired: &BTreeMap<String, ProtocolConfig>,
    record: &FederationRecord,
    observed: &BTreeMap<String, ProtocolConfig>,
    stale_mappings: &BTreeSet<String>,
) -> Vec<String> {
    let mut parts = Vec::new();
    for (protocol, want) in desired {
        let have = observed.get(protocol);
        if have.and_then(|h| h.mapping.as_ref()) != want.mapping.as_ref() {
            parts.push(format!("protocols.{protocol}.mapping"));
        }
        if have.and_then(|h| h.mapping_id.as_ref()) != want.mapping_id.as_ref() {
            parts.push(format!("protocols.{protocol}.mappingId"));
        }
    }
    for (protocol, have) in observed {
        let declared_before = record.managed_protocols.contains(protocol);
        if !desired.contains_key(protocol) && declared_before && have.mapping_id.is_some() {
            parts.push(format!("protocols.{protocol}"));
        }
    }
    parts.extend(
        stale_mappings
            .iter()
            .map(|m| format!("createdMappings.{m}")),
    );
    parts
}

/// The value of one part named by [`diff`] in `protocols`, for showing a change.
pub fn part_value(
    protocols: &BTreeMap<String, ProtocolConfig>,
    stale_mappings: &BTreeSet<String>,
    part: &str,
) -> Option<Value> {
    if let Some(mapping) = part.strip_prefix("createdMappings.") {
        return Some(Value::Bool(stale_mappings.contains(mapping)));
    }
    let rest = part.strip_prefix("protocols.")?;
    let (protocol, field) = match (
        rest.strip_suffix(".mapping"),
        rest.strip_suffix(".mappingId"),
    ) {
        (Some(p), _) if protocols.contains_key(p) => (p, "mapping"),
        (_, Some(p)) if protocols.contains_key(p) => (p, "mappingId"),
        _ => (rest, ""),
    };
    let value = serde_json::to_value(protocols.get(protocol)).unwrap_or(Value::Null);
    Some(match field {
        "" => value,
        field => value.get(field).cloned().unwrap_or(Value::Null),
    })
}

/// Which rule a Keystone 400 names (`Invalid input for field 'rules/2/local': ...`).
pub fn rule_index(message: &str) -> Option<usize> {
    let rest = &message[message.find("rules/")? + "rules/".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
