//! Evidence of a create attempt, carried on the remote provider itself: a Coveo parameter, a
//! suffix of the Keystone description, a JITSudo `config` key. After an ambiguous create (a
//! timeout, a lost answer, a crash), a provider found with this object's attempt token is
//! provably the one that create made; one without it is someone else's. The token is ignored
//! when comparing configurations, so it never shows as drift.
use serde_json::Value;

use super::ProviderConfig;

/// Coveo parameter holding the token.
pub const COVEO_PARAMETER: &str = "secprov.dev/create-attempt";
/// JITSudo `config` key holding the token.
pub const JITSUDO_CONFIG_KEY: &str = "secprov_create_attempt";
/// The Keystone description ends with `KEYSTONE_OPEN token KEYSTONE_CLOSE`.
const KEYSTONE_OPEN: &str = " [secprov.dev/create-attempt ";
const KEYSTONE_CLOSE: &str = "]";

impl ProviderConfig {
    /// This configuration with the attempt token added (the body of a create).
    pub fn with_creation_token(&self, token: &str) -> ProviderConfig {
        let mut config = self.without_creation_token();
        match &mut config {
            ProviderConfig::Coveo(c) => {
                c.parameters
                    .insert(COVEO_PARAMETER.to_owned(), token.to_owned());
            }
            ProviderConfig::Keystone(k) => {
                k.description = format!("{}{KEYSTONE_OPEN}{token}{KEYSTONE_CLOSE}", k.description);
            }
            ProviderConfig::Jitsudo(j) => {
                if !j.config.is_object() {
                    j.config = Value::Object(Default::default());
                }
                if let Some(object) = j.config.as_object_mut() {
                    object.insert(
                        JITSUDO_CONFIG_KEY.to_owned(),
                        Value::String(token.to_owned()),
                    );
                }
            }
        }
        config
    }

    /// The attempt token this (observed) configuration carries, if any.
    pub fn creation_token(&self) -> Option<String> {
        match self {
            ProviderConfig::Coveo(c) => c.parameters.get(COVEO_PARAMETER).cloned(),
            ProviderConfig::Keystone(k) => keystone_split(&k.description).1.map(str::to_owned),
            ProviderConfig::Jitsudo(j) => j
                .config
                .get(JITSUDO_CONFIG_KEY)
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }

    /// This configuration without any attempt token.
    pub fn without_creation_token(&self) -> ProviderConfig {
        let mut config = self.clone();
        match &mut config {
            ProviderConfig::Coveo(c) => {
                c.parameters.remove(COVEO_PARAMETER);
            }
            ProviderConfig::Keystone(k) => {
                k.description = keystone_split(&k.description).0.to_owned();
            }
            ProviderConfig::Jitsudo(j) => {
                if let Some(object) = j.config.as_object_mut() {
                    object.remove(JITSUDO_CONFIG_KEY);
                }
            }
        }
        config
    }
}

/// (description without the token, token).
fn keystone_split(description: &str) -> (&str, Option<&str>) {
    description
        .strip_suffix(KEYSTONE_CLOSE)
        .and_then(|rest| rest.rsplit_once(KEYSTONE_OPEN))
        .map_or((description, None), |(before, token)| (before, Some(token)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::security_provider::{
        CoveoProviderSpec, JitsudoProviderSpec, KeystoneProviderSpec,
    };
    use crate::backend::{coveo::CoveoConfig, jitsudo::JitsudoConfig, keystone::KeystoneConfig};

    fn configs() -> Vec<ProviderConfig> {
        vec![
            ProviderConfig::Coveo(CoveoConfig::desired(
                "p",
                "P",
                &CoveoProviderSpec::default(),
            )),
            ProviderConfig::Keystone(KeystoneConfig::desired(
                "p",
                &KeystoneProviderSpec {
                    description: Some("corporate SSO".into()),
                    ..Default::default()
                },
            )),
            ProviderConfig::Jitsudo(JitsudoConfig::desired("p", &JitsudoProviderSpec::default())),
        ]
    }

    #[test]
    fn the_token_round_trips_and_never_shows_as_drift() {
        for desired in configs() {
            let created = desired.with_creation_token("uid-1/a1b2");
            assert_ne!(created, desired, "the create body carries the token");
            assert_eq!(created.creation_token().as_deref(), Some("uid-1/a1b2"));
            assert_eq!(desired.creation_token(), None);
            assert!(desired.diff(&created).is_empty(), "{desired:?}");
            assert_eq!(created.without_creation_token(), desired);
        }
    }

    #[test]
    fn a_provider_made_by_someone_else_carries_no_token() {
        let mut foreign = KeystoneConfig::desired("p", &KeystoneProviderSpec::default());
        foreign.description = "made in the console [not ours]".into();
        assert_eq!(ProviderConfig::Keystone(foreign).creation_token(), None);
    }
}
