//! Normalized configuration of a Coveo provider and its diff (pure).
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::api::security_provider::{CoveoProviderSpec, SecurityProvider};

use super::*;

/// The spec-owned part of a Coveo provider, normalized so that equal values mean "no update
/// needed": reference order is irrelevant, cascading providers are compared by id, masked
/// values by the keyed hash recorded when they were last sent, schedules by the fields their
/// frequency type uses, and server-managed fields are left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CoveoConfig {
    pub id: String,
    pub display_name: String,
    #[serde(rename = "type")]
    pub provider_type: String,
    pub node_required: bool,
    pub case_sensitive: bool,
    pub parameters: BTreeMap<String, String>,
    /// (type, id) pairs.
    pub referenced_by: BTreeSet<(String, String)>,
    /// id -> type. Only the ids are compared.
    #[serde(rename = "cascadingSecurityProviders")]
    pub cascading: BTreeMap<String, String>,
    /// Names of the sensitive parameters (their values are masked on read).
    pub sensitive_parameters: BTreeSet<String>,
    /// User identity name -> user name (the passwords are masked on read).
    pub user_identities: BTreeMap<String, String>,
    /// Desired only: fingerprint of the secret values resolved from Secrets (None before they
    /// are resolved, when there are none, or when no fingerprint key is at hand: the CLI).
    pub secrets_hash: Option<String>,
    /// Desired only: the hash recorded in status by the last write.
    #[serde(skip)]
    pub recorded_secrets_hash: Option<String>,
    /// Desired only: the values themselves. Never serialized; Debug prints names only.
    #[serde(skip)]
    pub secrets: Option<secrets::SecretMaterial>,
    /// Desired: the listed refresh types (empty leaves remote schedules alone). Observed:
    /// every schedule read, when they were read.
    pub refresh_schedules: BTreeMap<String, schedules::ScheduleConfig>,
    /// Observed only: the schedules as read (None when not read), for ids and PUT bodies.
    #[serde(skip)]
    pub remote_schedules: Option<BTreeMap<String, schedules::RemoteSchedule>>,
}

/// The diff field of secret values whose hash differs from the recorded one.
pub const SECRET_VALUES_FIELD: &str = "secretValues";

impl CoveoConfig {
    /// The desired configuration of a SecurityProvider, with documented defaults applied.
    pub fn desired(id: &str, display_name: &str, spec: &CoveoProviderSpec) -> CoveoConfig {
        CoveoConfig {
            id: id.to_owned(),
            display_name: display_name.to_owned(),
            provider_type: spec.provider_type.unwrap_or_default().as_wire(),
            node_required: spec.node_required.unwrap_or(false),
            case_sensitive: spec.case_sensitive.unwrap_or(false),
            parameters: spec.parameters.clone(),
            referenced_by: spec
                .referenced_by
                .iter()
                .map(|r| (reference_type_wire(r.reference_type), r.id.clone()))
                .collect(),
            cascading: spec
                .cascading_security_providers
                .iter()
                .map(|c| (c.id.clone(), c.provider_type.as_wire()))
                .collect(),
            sensitive_parameters: spec.sensitive_parameters.keys().cloned().collect(),
            user_identities: spec
                .user_identities
                .iter()
                .map(|(name, identity)| (name.clone(), identity.user_name.clone()))
                .collect(),
            secrets_hash: None,
            recorded_secrets_hash: None,
            secrets: None,
            refresh_schedules: schedules::desired(&spec.refresh_schedules),
            remote_schedules: None,
        }
    }

    /// Sets the secret values resolved from Secrets and their fingerprint for the object
    /// `object_uid` under `key`. Without a key (the CLI, which may not read it) the values
    /// are kept but not compared: see [`Self::diff`].
    pub fn set_secrets(
        &mut self,
        material: secrets::SecretMaterial,
        key: Option<&crate::fingerprint_key::FingerprintKey>,
        object_uid: &str,
    ) {
        self.secrets_hash = key.and_then(|key| material.fingerprint(key, object_uid));
        self.secrets = Some(material);
    }

    /// Whether the provider declares secret values (which must be resolved before a write).
    pub fn needs_secrets(&self) -> bool {
        !self.sensitive_parameters.is_empty() || !self.user_identities.is_empty()
    }

    /// The fields a provider PUT fixes (everything but the schedules).
    pub fn provider_diff(&self, observed: &CoveoConfig) -> Vec<&'static str> {
        self.diff(observed)
            .into_iter()
            .filter(|f| !f.starts_with("refreshSchedules"))
            .collect()
    }

    /// The refresh types whose remote schedule must be corrected (none when not read).
    pub fn schedules_to_fix(&self, observed: &CoveoConfig) -> Vec<&str> {
        match &observed.remote_schedules {
            Some(remote) => schedules::differing(&self.refresh_schedules, remote),
            None => Vec::new(),
        }
    }

    /// Names of the fields that differ, `self` being desired.
    pub fn diff(&self, observed: &CoveoConfig) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.display_name != observed.display_name {
            fields.push("displayName");
        }
        if self.provider_type != observed.provider_type {
            fields.push("type");
        }
        if self.node_required != observed.node_required {
            fields.push("nodeRequired");
        }
        if self.case_sensitive != observed.case_sensitive {
            fields.push("caseSensitive");
        }
        if self.parameters != observed.parameters {
            fields.push("parameters");
        }
        if self.referenced_by != observed.referenced_by {
            fields.push("referencedBy");
        }
        if !self.cascading.keys().eq(observed.cascading.keys()) {
            fields.push("cascadingSecurityProviders");
        }
        if self.sensitive_parameters != observed.sensitive_parameters {
            fields.push("sensitiveParameters");
        }
        if self.user_identities != observed.user_identities {
            fields.push("userIdentities");
        }
        // Masked on read: a changed value is known only from the fingerprint of what was sent
        // last. A fingerprint made with another key (a rotation, or the uid-keyed hash of
        // earlier versions) differs as well: sent once more, then recorded under this key.
        // Without a fingerprint (unresolved values, or the CLI without the key) nothing is
        // compared: no values, or no way to tell.
        if self.secrets.is_some()
            && self.secrets_hash.is_some()
            && self.secrets_hash != self.recorded_secrets_hash
        {
            fields.push(SECRET_VALUES_FIELD);
        }
        for refresh_type in self.schedules_to_fix(observed) {
            fields.push(schedules::field_name(refresh_type));
        }
        fields
    }

    /// The spec block that declares exactly this configuration (used by `export`), so that
    /// applying it plans no update. Defaults are left out.
    pub fn to_spec(&self) -> Result<CoveoProviderSpec, String> {
        if self.needs_secrets() {
            // Coveo masks these values: a manifest without them would blank them remotely.
            return Err(format!(
                "its sensitive parameters ({}) or user identities ({}) are masked by Coveo; declare it by hand with spec.coveo.sensitiveParameters and userIdentities naming Secrets",
                self.sensitive_parameters
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                self.user_identities
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        fn parse<T: serde::de::DeserializeOwned>(what: &str, value: &str) -> Result<T, String> {
            serde_json::from_value(serde_json::Value::String(value.to_owned()))
                .map_err(|_| format!("{what} {value:?} is not supported by this operator version"))
        }
        Ok(CoveoProviderSpec {
            provider_type: Some(parse("provider type", &self.provider_type)?),
            node_required: self.node_required.then_some(true),
            case_sensitive: self.case_sensitive.then_some(true),
            parameters: self.parameters.clone(),
            referenced_by: self
                .referenced_by
                .iter()
                .map(|(t, id)| {
                    Ok(crate::api::security_provider::CoveoReference {
                        reference_type: parse("reference type", t)?,
                        id: id.clone(),
                    })
                })
                .collect::<Result<_, String>>()?,
            cascading_security_providers: self
                .cascading
                .iter()
                .map(|(id, t)| {
                    Ok(crate::api::security_provider::CoveoCascadingProvider {
                        id: id.clone(),
                        provider_type: parse("cascading provider type", t)?,
                    })
                })
                .collect::<Result<_, String>>()?,
            refresh_schedules: match &self.remote_schedules {
                Some(remote) => schedules::to_spec(remote)?,
                None => Vec::new(),
            },
            ..Default::default()
        })
    }

    /// The request body for POST and PUT.
    pub fn to_request(&self) -> ProviderRequest {
        ProviderRequest {
            id: self.id.clone(),
            display_name: self.display_name.clone(),
            provider_type: self.provider_type.clone(),
            node_required: self.node_required,
            case_sensitive: self.case_sensitive,
            parameters: self.parameters_wire(),
            user_identities: self
                .user_identities
                .iter()
                .map(|(name, user_name)| {
                    let password = self.secrets.as_ref().and_then(|s| s.password(name));
                    (
                        name.clone(),
                        UserIdentityWire {
                            name: Some(name.clone()),
                            user_name: Some(user_name.clone()),
                            password: password.map(str::to_owned),
                        },
                    )
                })
                .collect(),
            referenced_by: self
                .referenced_by
                .iter()
                .map(|(t, id)| ReferenceWire {
                    reference_type: t.clone(),
                    id: id.clone(),
                })
                .collect(),
            cascading_security_providers: self
                .cascading
                .iter()
                .map(|(id, t)| {
                    (
                        id.clone(),
                        CascadingWire {
                            id: id.clone(),
                            name: None,
                            provider_type: Some(t.clone()),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The request's parameters: the plain ones with their values, the sensitive ones with
    /// the values read from their Secrets.
    fn parameters_wire(&self) -> BTreeMap<String, ParameterWire> {
        self
            .parameters
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    ParameterWire {
                        value: Some(v.clone()),
                        sensitive: Some(false),
                    },
                )
            })
            .chain(self.sensitive_parameters.iter().map(|name| {
                let value = self.secrets.as_ref().and_then(|s| s.parameter(name));
                (
                    name.clone(),
                    ParameterWire {
                        value: value.map(str::to_owned),
                        sensitive: Some(true),
                    },
                )
            }))
            .collect()
    }
}

fn reference_type_wire(t: crate::api::security_provider::CoveoReferenceType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Builds the desired configuration of a SecurityProvider whose spec has a `coveo` block.
pub fn desired_config(sp: &SecurityProvider) -> Option<CoveoConfig> {
    let spec = sp.spec.coveo.as_ref()?;
    let mut config = CoveoConfig::desired(&sp.provider_id(), &sp.display_name(), spec);
    config.recorded_secrets_hash = sp
        .status
        .as_ref()
        .and_then(|s| s.coveo.as_ref())
        .and_then(|c| c.secrets_hash.clone());
    Some(config)
}
