//! Deciding what to do remotely: a pure function of the desired configuration, what was
//! observed and the object's policies. No I/O here.
use super::observe::Retarget;
use crate::api::REMOTE_SYSTEM_CHANGE_ANNOTATION;
use crate::backend::{ObservedProvider, ProviderConfig};

/// What a reconcile should do to the remote provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The provider does not exist: create it.
    Create,
    /// The provider exists but differs in these spec fields: update it.
    Update { fields: Vec<String> },
    /// Nothing to write.
    InSync,
    /// Differences exist but policy forbids writing (observe-only or paused); reported, not
    /// applied.
    Withheld {
        reason: &'static str,
        message: String,
        fields: Vec<String>,
    },
    /// The provider cannot be managed by this object as things stand.
    Blocked {
        reason: &'static str,
        message: String,
    },
}

impl Plan {
    /// Whether carrying out the plan writes remotely.
    pub fn writes(&self) -> bool {
        matches!(self, Plan::Create | Plan::Update { .. })
    }
}

/// Everything the decision depends on.
#[derive(Clone, Debug)]
pub struct PlanInput<'a> {
    pub desired: &'a ProviderConfig,
    pub observed: Option<&'a ObservedProvider>,
    /// This object created or adopted the remote provider before (status.remoteId or a
    /// create-pending marker).
    pub owned: bool,
    /// status.remoteId was recorded for another remote system than the connection reaches
    /// now: nothing is created or adopted there until the change is acknowledged.
    pub retarget: Option<&'a Retarget>,
    /// Another object (`namespace/name`) already manages the provider found.
    pub managed_by: Option<&'a str>,
    /// `spec.adopt`.
    pub adopt: bool,
    /// `managementPolicy: Observe`.
    pub observe_only: bool,
    /// The `secprov.dev/paused` annotation.
    pub paused: bool,
}

/// Condition reason when a remote write is withheld because of the pause annotation.
pub const REASON_PAUSED: &str = "ReconcilePaused";
/// Condition reason for observe-only objects.
pub const REASON_OBSERVE_ONLY: &str = "ObserveOnly";
/// Condition reason when someone else's provider already has this id.
pub const REASON_ALREADY_EXISTS: &str = "AlreadyExists";
/// Condition reason when adopting would make a second object manage one remote provider.
pub const REASON_ALREADY_MANAGED: &str = "AlreadyManaged";
/// Condition reason when status.remoteId belongs to another remote system than the
/// connection now reaches, and a provider this object did not create has the id there.
pub const REASON_REMOTE_SYSTEM_CHANGED: &str = "RemoteSystemChanged";
/// Condition reason when a create-only field (such as a domain) differs remotely: no update
/// can fix it.
pub const REASON_CREATE_ONLY_DIFFERS: &str = "CreateOnlyFieldDiffers";
/// Condition reason when an observe-only object finds nothing to observe.
pub const REASON_NOT_FOUND: &str = "RemoteProviderNotFound";

/// Decides the remote action.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    if !input.observe_only
        && let Some(blocked) = blocked_by_ownership(input)
    {
        return blocked;
    }
    let Some(observed) = input.observed else {
        if input.observe_only {
            return Plan::Blocked {
                reason: REASON_NOT_FOUND,
                message: "the remote provider does not exist and managementPolicy Observe never creates it".into(),
            };
        }
        if input.paused {
            return Plan::Withheld {
                reason: REASON_PAUSED,
                message: "the remote provider does not exist; creation waits until the secprov.dev/paused annotation is removed".into(),
                fields: vec![],
            };
        }
        return Plan::Create;
    };
    if !input.owned
        && !input.observe_only
        && let Some(blocked) = not_ours(input, observed)
    {
        return blocked;
    }
    if let Some(message) = input.desired.create_only_mismatch(&observed.config) {
        return Plan::Blocked {
            reason: REASON_CREATE_ONLY_DIFFERS,
            message,
        };
    }
    let fields = input.desired.diff(&observed.config);
    if fields.is_empty() {
        return Plan::InSync;
    }
    if input.observe_only {
        return Plan::Withheld {
            reason: REASON_OBSERVE_ONLY,
            message: format!(
                "remote differs from spec in {}; managementPolicy Observe never writes",
                fields.join(", ")
            ),
            fields,
        };
    }
    if input.paused {
        return Plan::Withheld {
            reason: REASON_PAUSED,
            message: format!(
                "remote differs from spec in {}; the update waits until the secprov.dev/paused annotation is removed",
                fields.join(", ")
            ),
            fields,
        };
    }
    Plan::Update { fields }
}

/// Why this object may not write at all: another object manages the provider (it holds the
/// claim, or claimed it first under another spelling of the endpoint), or the connection now
/// reaches another remote system than the one status.remoteId was recorded in and the change
/// is not acknowledged (creating there would silently fork the provider).
fn blocked_by_ownership(input: &PlanInput<'_>) -> Option<Plan> {
    if let Some(other) = input.managed_by {
        let id = input
            .observed
            .map_or(input.desired.lookup_key(), |o| o.remote_id.as_str());
        return Some(Plan::Blocked {
            reason: REASON_ALREADY_MANAGED,
            message: format!(
                "the remote provider {id:?} is already managed by SecurityProvider {other}; two objects managing one provider overwrite each other, so this one neither writes nor deletes it: remove this object, or that one with deletionPolicy: Orphan first"
            ),
        });
    }
    let retarget = input.retarget.filter(|r| !r.acknowledged)?;
    Some(Plan::Blocked {
        reason: REASON_REMOTE_SYSTEM_CHANGED,
        message: format!(
            "status.remoteId {:?} was recorded in {} but the connection now reaches {}; nothing is created or adopted there until you confirm: annotate this object {REMOTE_SYSTEM_CHANGE_ANNOTATION}={:?} to manage a provider in {} and leave {:?} in {} (it is not deleted), or point the connection back",
            retarget.remote_id,
            retarget.from,
            retarget.to,
            retarget.to,
            retarget.to,
            retarget.remote_id,
            retarget.from,
        ),
    })
}

/// Why a provider found under this object's id, that it does not own, may not be written:
/// None when `spec.adopt` lets it take the provider over.
fn not_ours(input: &PlanInput<'_>, observed: &ObservedProvider) -> Option<Plan> {
    if input.adopt {
        return None;
    }
    let id = &observed.remote_id;
    Some(Plan::Blocked {
        reason: REASON_ALREADY_EXISTS,
        message: format!(
            "a remote provider with id {id:?} already exists and was not created by this object; set spec.adopt: true to take it over"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::security_provider::CoveoProviderSpec;
    use crate::backend::coveo::CoveoConfig;
    use crate::backend::{RemoteHealth, RemoteState};

    fn desired(display: &str) -> ProviderConfig {
        ProviderConfig::Coveo(CoveoConfig::desired(
            "p",
            display,
            &CoveoProviderSpec::default(),
        ))
    }

    fn observed(display: &str) -> ObservedProvider {
        ObservedProvider {
            remote_id: "p".into(),
            config: desired(display),
            state: RemoteState::default(),
            health: RemoteHealth::Healthy,
        }
    }

    fn input<'a>(d: &'a ProviderConfig, o: Option<&'a ObservedProvider>) -> PlanInput<'a> {
        PlanInput {
            desired: d,
            observed: o,
            owned: true,
            retarget: None,
            managed_by: None,
            adopt: false,
            observe_only: false,
            paused: false,
        }
    }

    #[test]
    fn missing_provider_is_created() {
        let d = desired("P");
        assert_eq!(plan(&input(&d, None)), Plan::Create);
    }

    #[test]
    fn equal_provider_needs_nothing_and_a_changed_one_an_update() {
        let d = desired("P");
        let same = observed("P");
        assert_eq!(plan(&input(&d, Some(&same))), Plan::InSync);
        let other = observed("Old");
        assert_eq!(
            plan(&input(&d, Some(&other))),
            Plan::Update {
                fields: vec!["displayName".to_owned()]
            }
        );
    }

    #[test]
    fn someone_elses_provider_is_not_touched_without_adopt() {
        let d = desired("P");
        let o = observed("Old");
        let mut i = input(&d, Some(&o));
        i.owned = false;
        assert!(matches!(
            plan(&i),
            Plan::Blocked {
                reason: REASON_ALREADY_EXISTS,
                ..
            }
        ));
        i.adopt = true;
        assert_eq!(
            plan(&i),
            Plan::Update {
                fields: vec!["displayName".to_owned()]
            }
        );
    }

    #[test]
    fn adopting_a_provider_another_object_manages_is_refused() {
        let d = desired("P");
        let o = observed("Old");
        let mut i = input(&d, Some(&o));
        (i.owned, i.adopt, i.managed_by) = (false, true, Some("team-a/idp"));
        assert!(
            matches!(plan(&i), Plan::Blocked { reason: REASON_ALREADY_MANAGED, ref message } if message.contains("team-a/idp")),
            "{:?}",
            plan(&i)
        );
        // Observing it is harmless.
        i.observe_only = true;
        assert!(matches!(plan(&i), Plan::Withheld { .. }));
    }

    fn moved(acknowledged: bool) -> Retarget {
        Retarget {
            remote_id: "p".into(),
            from: "http://127.0.0.1:1 (org)".into(),
            to: "http://127.0.0.1:2 (org)".into(),
            acknowledged,
        }
    }

    #[test]
    fn a_keystone_domain_that_differs_remotely_is_never_in_sync() {
        use crate::api::security_provider::KeystoneProviderSpec;
        use crate::backend::keystone::KeystoneConfig;
        let spec = |domain: Option<&str>| KeystoneProviderSpec {
            domain_id: domain.map(str::to_owned),
            ..Default::default()
        };
        let keystone =
            |domain| ProviderConfig::Keystone(KeystoneConfig::desired("p", &spec(domain)));
        let remote = ObservedProvider {
            config: keystone(Some("remote-domain")),
            ..observed("P")
        };
        let d = keystone(Some("declared-domain"));
        match plan(&input(&d, Some(&remote))) {
            Plan::Blocked { reason, message } => {
                assert_eq!(reason, REASON_CREATE_ONLY_DIFFERS);
                assert!(message.contains("\"remote-domain\""), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // The same domain, or none declared (Keystone chose it): in sync.
        for d in [keystone(Some("remote-domain")), keystone(None)] {
            assert_eq!(plan(&input(&d, Some(&remote))), Plan::InSync);
        }
    }

    #[test]
    fn a_connection_pointed_at_another_system_is_refused_until_acknowledged() {
        let d = desired("P");
        let o = observed("Old");
        let unacknowledged = moved(false);
        let mut i = input(&d, Some(&o));
        (i.owned, i.retarget) = (false, Some(&unacknowledged));
        for observed in [Some(&o), None] {
            // Found there or not: neither adopted nor created, and the message names both.
            let decision = plan(&PlanInput {
                observed,
                ..i.clone()
            });
            assert!(
                matches!(&decision, Plan::Blocked { reason: REASON_REMOTE_SYSTEM_CHANGED, message }
                    if message.contains("127.0.0.1:1 (org)") && message.contains("127.0.0.1:2 (org)")
                        && message.contains(REMOTE_SYSTEM_CHANGE_ANNOTATION)),
                "{decision:?}"
            );
        }
        let acknowledged = moved(true);
        i.retarget = Some(&acknowledged);
        assert_eq!(
            plan(&PlanInput {
                observed: None,
                ..i.clone()
            }),
            Plan::Create
        );
        assert!(matches!(
            plan(&i),
            Plan::Blocked {
                reason: REASON_ALREADY_EXISTS,
                ..
            }
        ));
    }

    #[test]
    fn an_owned_provider_whose_claim_another_object_holds_is_not_written() {
        let d = desired("P");
        let o = observed("Old");
        let mut i = input(&d, Some(&o));
        i.managed_by = Some("team-a/idp");
        assert!(matches!(
            plan(&i),
            Plan::Blocked {
                reason: REASON_ALREADY_MANAGED,
                ..
            }
        ));
        // Nor created when the other object claimed the id first.
        i.observed = None;
        assert!(matches!(
            plan(&i),
            Plan::Blocked {
                reason: REASON_ALREADY_MANAGED,
                ..
            }
        ));
    }

    #[test]
    fn observe_only_never_writes() {
        let d = desired("P");
        let o = observed("Old");
        let mut i = input(&d, Some(&o));
        i.observe_only = true;
        i.owned = false;
        assert!(matches!(
            plan(&i),
            Plan::Withheld {
                reason: REASON_OBSERVE_ONLY,
                ..
            }
        ));
        let i = PlanInput {
            observed: None,
            ..i
        };
        assert!(matches!(
            plan(&i),
            Plan::Blocked {
                reason: REASON_NOT_FOUND,
                ..
            }
        ));
    }

    #[test]
    fn paused_withholds_creates_and_updates() {
        let d = desired("P");
        let o = observed("Old");
        let mut i = input(&d, Some(&o));
        i.paused = true;
        assert!(
            matches!(plan(&i), Plan::Withheld { reason: REASON_PAUSED, ref fields, .. } if fields == &vec!["displayName"])
        );
        let i = PlanInput {
            observed: None,
            ..i
        };
        assert!(matches!(
            plan(&i),
            Plan::Withheld {
                reason: REASON_PAUSED,
                ..
            }
        ));
        let same = observed("P");
        let i = PlanInput {
            observed: Some(&same),
            ..i
        };
        assert_eq!(plan(&i), Plan::InSync);
    }
}
