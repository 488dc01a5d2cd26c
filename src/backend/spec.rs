//! From a SecurityProvider spec to the desired configuration of its backend, and the check
//! that the SecurityProvider and its ProviderConnection name the same backend.
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::ProviderConfig;
pub use super::seam::one_block_message;
use crate::api::SecurityProvider;
use crate::error::Error;
use crate::fingerprint_key::FingerprintKey;

/// The desired remote configuration from the spec (secret values not resolved: see
/// [`resolve_desired`]).
pub fn desired_config(sp: &SecurityProvider) -> Result<ProviderConfig, Error> {
    // A create-attempt token copied into a spec (an older `export`) is evidence, never
    // configuration: dropped here, it cannot be written back or compared.
    ProviderConfig::from_spec(sp)
        .map(|d| d.without_creation_token())
        .ok_or_else(|| Error::InvalidSpec(one_block_message()))
}

/// The desired configuration with the secret values it sends read from Secrets in the
/// object's namespace, and their fingerprint under the installation's `key`. What the
/// controller writes, and what `plan` compares (`plan` has no key: it reads the values, so a
/// missing one is reported, but cannot tell whether they changed). Observe-only objects read
/// no Secret: their values are never sent.
pub async fn resolve_desired(
    client: &Client,
    sp: &SecurityProvider,
    key: Option<&FingerprintKey>,
) -> Result<ProviderConfig, Error> {
    let mut desired = desired_config(sp)?;
    // `managementPolicy: Observe` never writes, so it needs no value (and no Secret).
    if sp.observe_only() {
        return Ok(desired);
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), &sp.namespace().unwrap_or_default());
    desired.resolve_secrets(sp, &api, key).await?;
    Ok(desired)
}

/// Checks that the SecurityProvider and its connection name the same backend.
pub fn check_backend_match(
    sp: &SecurityProvider,
    connection: &crate::api::ProviderConnection,
) -> Result<(), Error> {
    let wanted = sp.spec.backend();
    let have = connection
        .spec
        .backend()
        .ok_or_else(|| Error::InvalidConnection {
            name: connection.name_any(),
            message: one_block_message(),
        })?;
    match wanted {
        Some(w) if w == have => Ok(()),
        Some(w) => Err(Error::BackendMismatch {
            provider: w.as_str().into(),
            connection: connection.name_any(),
            connection_backend: have.as_str().into(),
        }),
        None => Err(Error::InvalidSpec(one_block_message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SecurityProviderSpec;
    use crate::api::provider_connection::BackendKind;
    use crate::api::security_provider::{
        CoveoProviderSpec, JitsudoProviderSpec, JitsudoProviderType,
    };

    fn provider(spec: SecurityProviderSpec) -> SecurityProvider {
        SecurityProvider::new("idp", spec)
    }

    fn spec() -> SecurityProviderSpec {
        SecurityProviderSpec::for_connection("c")
    }

    #[test]
    fn desired_config_dispatches_on_the_backend_block() {
        let coveo = provider(SecurityProviderSpec {
            coveo: Some(CoveoProviderSpec::default()),
            ..spec()
        });
        let desired = desired_config(&coveo).unwrap();
        assert_eq!(
            (desired.backend(), desired.lookup_key()),
            (BackendKind::Coveo, "idp")
        );
        let keystone = provider(SecurityProviderSpec {
            provider_id: Some("acme".into()),
            keystone: Some(Box::default()),
            ..spec()
        });
        let desired = desired_config(&keystone).unwrap();
        assert_eq!(
            (desired.backend(), desired.lookup_key()),
            (BackendKind::Keystone, "acme")
        );
        // JITSudo providers are found by name: displayName, else the provider id.
        let jitsudo = provider(SecurityProviderSpec {
            display_name: Some("Okta workforce".into()),
            jitsudo: Some(Box::new(JitsudoProviderSpec {
                provider_type: JitsudoProviderType::Okta,
                config: None,
                enabled: None,
            })),
            ..spec()
        });
        let desired = desired_config(&jitsudo).unwrap();
        assert_eq!(
            (desired.backend(), desired.lookup_key()),
            (BackendKind::Jitsudo, "Okta workforce")
        );
        assert!(matches!(
            desired_config(&provider(spec())),
            Err(Error::InvalidSpec(_))
        ));
        // Configurations of different backends never compare equal.
        assert_eq!(
            desired_config(&coveo)
                .unwrap()
                .diff(&desired_config(&keystone).unwrap()),
            vec!["backend"]
        );
    }
}
