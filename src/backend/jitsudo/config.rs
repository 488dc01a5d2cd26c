//! Normalized configuration of a JITSudo provider and its diff (pure).
use serde_json::{Value, json};

use crate::api::security_provider::{JitsudoProviderSpec, SecurityProvider};

/// The spec-owned part of a JITSudo identity provider. A missing `config` is `{}`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JitsudoConfig {
    #[serde(rename = "displayName")]
    pub name: String,
    pub provider_type: String,
    pub config: Value,
    pub enabled: bool,
}

impl JitsudoConfig {
    /// The desired configuration, with defaults (`enabled` true, `config` empty).
    pub fn desired(name: &str, spec: &JitsudoProviderSpec) -> JitsudoConfig {
        JitsudoConfig {
            name: name.to_owned(),
            provider_type: spec.provider_type.as_wire(),
            config: spec.config.clone().unwrap_or_else(|| json!({})),
            enabled: spec.enabled.unwrap_or(true),
        }
    }

    /// The spec block that declares exactly this configuration (used by `export`); defaults
    /// are left out.
    pub fn to_spec(&self) -> Result<JitsudoProviderSpec, String> {
        let provider_type = serde_json::from_value(Value::String(self.provider_type.clone()))
            .map_err(|_| {
                format!(
                    "provider type {:?} is not supported by this operator version",
                    self.provider_type
                )
            })?;
        let empty = self.config.as_object().is_some_and(|o| o.is_empty());
        Ok(JitsudoProviderSpec {
            provider_type,
            config: (!empty).then(|| self.config.clone()),
            enabled: (!self.enabled).then_some(false),
        })
    }

    /// Names of the fields that differ, `self` being desired. `providerType` is reported too,
    /// although JITSudo cannot change it: the update then fails with a clear terminal error.
    pub fn diff(&self, observed: &JitsudoConfig) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.name != observed.name {
            fields.push("displayName");
        }
        if self.provider_type != observed.provider_type {
            fields.push("providerType");
        }
        if self.config != observed.config {
            fields.push("config");
        }
        if self.enabled != observed.enabled {
            fields.push("enabled");
        }
        fields
    }

    /// The create body (assumed endpoint, see the module docs).
    pub fn create_body(&self) -> Value {
        json!({
            "name": self.name,
            "provider_type": self.provider_type,
            "config": self.config,
            "enabled": self.enabled,
        })
    }

    /// The documented update body.
    pub fn update_body(&self) -> Value {
        json!({"name": self.name, "config": self.config, "enabled": self.enabled})
    }
}

/// Builds the desired configuration of a SecurityProvider whose spec has a `jitsudo` block.
/// The provider's name is `displayName`, else the provider id.
pub fn desired_config(sp: &SecurityProvider) -> Option<JitsudoConfig> {
    let spec = sp.spec.jitsudo.as_ref()?;
    Some(JitsudoConfig::desired(&sp.display_name(), spec))
}
