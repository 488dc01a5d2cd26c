//! Normalized configuration of a Coveo provider and its diff (pure).
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::api::security_provider::{CoveoProviderSpec, SecurityProvider};
use crate::backend::ProviderConfig;

use super::*;

/// The spec-owned part of a Coveo provider, normalized so that equal values mean "no update
/// needed": reference order is irrelevant, cascading providers are compared by id, sensitive
/// parameters (masked by Coveo) and server-managed fields are left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
}

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
        fields
    }

    /// The spec block that declares exactly this configuration (used by `export`), so that
    /// applying it plans no update. Defaults are left out.
    pub fn to_spec(&self) -> Result<CoveoProviderSpec, String> {
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
            parameters: self
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
}

fn reference_type_wire(t: crate::api::security_provider::CoveoReferenceType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Builds the desired configuration of a SecurityProvider whose spec has a `coveo` block.
pub fn desired_config(sp: &SecurityProvider) -> Option<ProviderConfig> {
    let spec = sp.spec.coveo.as_ref()?;
    Some(ProviderConfig::Coveo(CoveoConfig::desired(
        &sp.provider_id(),
        &sp.display_name(),
        spec,
    )))
}
