//! Deciding what to do remotely: a pure function of the desired configuration, what was
//! observed and the object's policies. No I/O here.
use crate::backend::{ObservedProvider, ProviderConfig};

/// What a reconcile should do to the remote provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The provider does not exist: create it.
    Create,
    /// The provider exists but differs in these spec fields: update it.
    Update { fields: Vec<&'static str> },
    /// Nothing to write.
    InSync,
    /// Differences exist but policy forbids writing (observe-only or paused); reported, not
    /// applied.
    Withheld {
        reason: &'static str,
        message: String,
        fields: Vec<&'static str>,
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
    /// status.remoteId was recorded for another remote system than the connection's current
    /// one: the provider found under this id there is not the one this object owns.
    pub recorded_elsewhere: bool,
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
/// Condition reason when an observe-only object finds nothing to observe.
pub const REASON_NOT_FOUND: &str = "RemoteProviderNotFound";

/// Decides the remote action.
pub fn plan(input: &PlanInput<'_>) -> Plan {
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

/// Why a provider found under this object's id, that it does not own, may not be written:
/// None when `spec.adopt` lets it take the provider over.
fn not_ours(input: &PlanInput<'_>, observed: &ObservedProvider) -> Option<Plan> {
    let id = &observed.remote_id;
    if let Some(other) = input.managed_by {
        return Some(Plan::Blocked {
            reason: REASON_ALREADY_MANAGED,
            message: format!(
                "the remote provider {id:?} is already managed by SecurityProvider {other}; two objects managing one provider overwrite each other, so this one does not adopt it: remove this object, or that one with deletionPolicy: Orphan first"
            ),
        });
    }
    if input.adopt {
        return None;
    }
    let (reason, message) = if input.recorded_elsewhere {
        (
            REASON_REMOTE_SYSTEM_CHANGED,
            format!(
                "status.remoteId was recorded in another remote system than the one the connection reaches now (endpoint or organization/tenant changed); the provider {id:?} found there was not created by this object and is left alone; set spec.adopt: true to take it over"
            ),
        )
    } else {
        (
            REASON_ALREADY_EXISTS,
            format!(
                "a remote provider with id {id:?} already exists and was not created by this object; set spec.adopt: true to take it over"
            ),
        )
    };
    Some(Plan::Blocked { reason, message })
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
            recorded_elsewhere: false,
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
                fields: vec!["displayName"]
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
                fields: vec!["displayName"]
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

    #[test]
    fn an_id_recorded_in_another_remote_system_is_not_taken_over() {
        let d = desired("P");
        let o = observed("Old");
        let mut i = input(&d, Some(&o));
        (i.owned, i.recorded_elsewhere) = (false, true);
        assert!(matches!(
            plan(&i),
            Plan::Blocked {
                reason: REASON_REMOTE_SYSTEM_CHANGED,
                ..
            }
        ));
        // Nothing under the id in the new remote system: created there.
        assert_eq!(
            plan(&PlanInput {
                observed: None,
                ..i
            }),
            Plan::Create
        );
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
