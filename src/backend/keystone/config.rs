//! Normalized configuration of a Keystone provider and its diff (pure).
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::api::security_provider::{
    KeystoneMappingSpec, KeystoneProtocolSpec, KeystoneProviderSpec, SecurityProvider,
};

use super::federation::{self, FederationRecord, ProtocolConfig};

/// The spec-owned part of a Keystone identity provider, normalized: a missing description is
/// empty and remote ids are a set (Keystone does not keep their order meaningful).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeystoneConfig {
    pub id: String,
    pub description: String,
    pub enabled: bool,
    pub remote_ids: BTreeSet<String>,
    /// None means the Keystone default.
    pub authorization_ttl: Option<i64>,
    /// Create-only: sent on create when set, never compared or patched (Keystone rejects it in
    /// PATCH, and the CRD makes it immutable).
    pub domain_id: Option<String>,
    /// Protocols and their mappings, keyed by protocol id (see [`federation`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub protocols: BTreeMap<String, ProtocolConfig>,
    /// Observed: mappings this object created that no declared protocol uses any more and
    /// that still exist (to be deleted).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub stale_mappings: BTreeSet<String>,
    /// Desired: what status records and the spec allows (see [`FederationRecord`]). Not
    /// configuration: never compared, never sent, not kept in snapshots.
    #[serde(skip)]
    pub record: FederationRecord,
}

impl KeystoneConfig {
    /// The desired configuration, with this operator's defaults (enabled unless told otherwise).
    pub fn desired(id: &str, spec: &KeystoneProviderSpec) -> KeystoneConfig {
        KeystoneConfig {
            id: id.to_owned(),
            description: spec.description.clone().unwrap_or_default(),
            enabled: spec.enabled.unwrap_or(true),
            remote_ids: spec.remote_ids.iter().cloned().collect(),
            authorization_ttl: spec.authorization_ttl,
            domain_id: spec.domain_id.clone(),
            protocols: federation::desired_protocols(id, &spec.protocols),
            stale_mappings: BTreeSet::new(),
            record: FederationRecord::default(),
        }
    }

    /// The spec block that declares exactly this configuration (used by `export`); defaults
    /// are left out.
    pub fn to_spec(&self) -> KeystoneProviderSpec {
        KeystoneProviderSpec {
            description: (!self.description.is_empty()).then(|| self.description.clone()),
            enabled: (!self.enabled).then_some(false),
            remote_ids: self.remote_ids.iter().cloned().collect(),
            authorization_ttl: self.authorization_ttl,
            domain_id: self.domain_id.clone(),
            protocols: self
                .protocols
                .iter()
                .filter_map(|(protocol, config)| {
                    let mapping = config.mapping.as_ref()?;
                    let spec = KeystoneProtocolSpec {
                        mapping: KeystoneMappingSpec {
                            id: Some(mapping.id.clone()),
                            rules: mapping.rules.to_spec(),
                        },
                    };
                    Some((protocol.clone(), spec))
                })
                .collect(),
        }
    }

    /// A `domain_id` declared in the spec that the remote provider does not have: Keystone
    /// cannot change it, so no update can ever bring the two in sync. None when the spec
    /// declares no domain (Keystone chose one) or the same one.
    pub fn create_only_mismatch(&self, observed: &KeystoneConfig) -> Option<String> {
        let desired = self.domain_id.as_deref()?;
        let remote = observed.domain_id.as_deref();
        (remote != Some(desired)).then(|| {
            format!(
                "keystone.domainId is {desired:?} but the remote provider is in domain {}; Keystone sets the domain only at creation, so it cannot be changed: delete the remote provider (or this object with deletionPolicy: Orphan) and create it again, or set domainId to the remote one",
                remote.map_or_else(|| "(none reported)".to_owned(), |r| format!("{r:?}"))
            )
        })
    }

    /// Names of the updatable fields and federation parts that differ, `self` being desired
    /// (CRD field names; federation parts as [`federation::diff`] names them).
    pub fn diff(&self, observed: &KeystoneConfig) -> Vec<String> {
        let mut fields: Vec<String> = self
            .idp_diff(observed)
            .into_iter()
            .map(String::from)
            .collect();
        fields.extend(federation::diff(
            &self.protocols,
            &self.record,
            &observed.protocols,
            &observed.stale_mappings,
        ));
        fields
    }

    /// The value of a federation part named by [`Self::diff`]; None for other fields.
    pub fn part_value(&self, field: &str) -> Option<Value> {
        federation::part_value(&self.protocols, &self.stale_mappings, field)
    }

    /// The identity provider's own fields that differ.
    pub fn idp_diff(&self, observed: &KeystoneConfig) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.description != observed.description {
            fields.push("description");
        }
        if self.enabled != observed.enabled {
            fields.push("enabled");
        }
        if self.remote_ids != observed.remote_ids {
            fields.push("remoteIds");
        }
        if self.authorization_ttl != observed.authorization_ttl {
            fields.push("authorizationTtl");
        }
        fields
    }

    fn description_wire(&self) -> Value {
        if self.description.is_empty() {
            Value::Null
        } else {
            Value::String(self.description.clone())
        }
    }

    /// The body of the create PUT: every field, `domain_id` only when set (Keystone creates a
    /// domain otherwise).
    pub fn create_body(&self) -> Value {
        let mut idp = Map::new();
        if !self.description.is_empty() {
            idp.insert("description".into(), self.description_wire());
        }
        idp.insert("enabled".into(), Value::Bool(self.enabled));
        idp.insert("remote_ids".into(), json!(self.remote_ids));
        if let Some(ttl) = self.authorization_ttl {
            idp.insert("authorization_ttl".into(), json!(ttl));
        }
        if let Some(domain) = &self.domain_id {
            idp.insert("domain_id".into(), json!(domain));
        }
        json!({ "identity_provider": idp })
    }

    /// The PATCH body with only the fields that differ from `observed`; None when nothing does.
    pub fn patch_body(&self, observed: &KeystoneConfig) -> Option<Value> {
        let mut idp = Map::new();
        for field in self.idp_diff(observed) {
            match field {
                "description" => {
                    idp.insert("description".into(), self.description_wire());
                }
                "enabled" => {
                    idp.insert("enabled".into(), Value::Bool(self.enabled));
                }
                "remoteIds" => {
                    idp.insert("remote_ids".into(), json!(self.remote_ids));
                }
                "authorizationTtl" => {
                    idp.insert("authorization_ttl".into(), json!(self.authorization_ttl));
                }
                _ => {}
            }
        }
        (!idp.is_empty()).then(|| json!({ "identity_provider": idp }))
    }
}

/// Builds the desired configuration of a SecurityProvider whose spec has a `keystone` block.
pub fn desired_config(sp: &SecurityProvider) -> Option<KeystoneConfig> {
    let spec = sp.spec.keystone.as_ref()?;
    let mut config = KeystoneConfig::desired(&sp.provider_id(), spec);
    config.record = FederationRecord::of(sp);
    Some(config)
}
