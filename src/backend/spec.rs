//! From a SecurityProvider spec to the desired configuration of its backend, and the check
//! that the SecurityProvider and its ProviderConnection name the same backend.
use kube::ResourceExt;

use super::ProviderConfig;
use crate::api::SecurityProvider;
use crate::api::provider_connection::BackendKind;
use crate::error::Error;

/// The desired remote configuration from the spec.
pub fn desired_config(sp: &SecurityProvider) -> Result<ProviderConfig, Error> {
    refuse_unapplied_fields(sp)?;
    let desired = match sp.spec.backend() {
        Some(BackendKind::Coveo) => super::coveo::desired_config(sp),
        Some(BackendKind::Keystone) => super::keystone::desired_config(sp),
        Some(BackendKind::Jitsudo) => super::jitsudo::desired_config(sp),
        None => None,
    };
    desired.ok_or_else(|| {
        Error::InvalidSpec(
            "exactly one of spec.coveo, spec.keystone or spec.jitsudo must be set".into(),
        )
    })
}

/// Fields the CRD already accepts but this version does not apply remotely yet (Secret-sourced
/// Coveo parameters and identities, refresh schedules). Accepting them silently would leave a
/// user believing a credential or a schedule was configured, so they are a terminal spec error.
fn refuse_unapplied_fields(sp: &SecurityProvider) -> Result<(), Error> {
    let Some(coveo) = sp.spec.coveo.as_ref() else {
        return Ok(());
    };
    let unapplied: Vec<&str> = [
        (
            "spec.coveo.sensitiveParameters",
            !coveo.sensitive_parameters.is_empty(),
        ),
        (
            "spec.coveo.userIdentities",
            !coveo.user_identities.is_empty(),
        ),
        (
            "spec.coveo.refreshSchedules",
            !coveo.refresh_schedules.is_empty(),
        ),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
    .collect();
    if unapplied.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidSpec(format!(
        "{} not applied by this operator version yet; remove {} to reconcile the provider",
        unapplied.join(", "),
        if unapplied.len() == 1 { "it" } else { "them" }
    )))
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
            message: "exactly one of spec.coveo, spec.keystone or spec.jitsudo must be set".into(),
        })?;
    match wanted {
        Some(w) if w == have => Ok(()),
        Some(w) => Err(Error::BackendMismatch {
            provider: w.as_str().into(),
            connection: connection.name_any(),
            connection_backend: have.as_str().into(),
        }),
        None => Err(Error::InvalidSpec(
            "exactly one of spec.coveo, spec.keystone or spec.jitsudo must be set".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SecurityProviderSpec;
    use crate::api::security_provider::{
        CoveoProviderSpec, JitsudoProviderSpec, JitsudoProviderType, KeystoneProviderSpec,
    };

    fn provider(spec: SecurityProviderSpec) -> SecurityProvider {
        SecurityProvider::new("idp", spec)
    }

    fn spec() -> SecurityProviderSpec {
        SecurityProviderSpec {
            connection_ref: "c".into(),
            provider_id: None,
            display_name: None,
            deletion_policy: None,
            management_policy: None,
            adopt: None,
            coveo: None,
            keystone: None,
            jitsudo: None,
        }
    }

    #[test]
    fn coveo_fields_not_applied_yet_are_a_spec_error_not_silently_ignored() {
        let mut coveo = CoveoProviderSpec::default();
        coveo.sensitive_parameters.insert(
            "password".into(),
            crate::api::common::SecretKeyRef {
                name: "s".into(),
                key: "k".into(),
            },
        );
        let sp = provider(SecurityProviderSpec {
            coveo: Some(coveo),
            ..spec()
        });
        match desired_config(&sp) {
            Err(Error::InvalidSpec(message)) => {
                assert!(
                    message.contains("spec.coveo.sensitiveParameters"),
                    "{message}"
                );
                assert!(!message.contains("refreshSchedules"), "{message}");
            }
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
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
            keystone: Some(KeystoneProviderSpec::default()),
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
            jitsudo: Some(JitsudoProviderSpec {
                provider_type: JitsudoProviderType::Okta,
                config: None,
                enabled: None,
            }),
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
