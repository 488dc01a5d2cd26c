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
    if !input.owned && !input.adopt && !input.observe_only {
        return Plan::Blocked {
            reason: REASON_ALREADY_EXISTS,
            message: format!(
                "a remote provider with id {:?} already exists and was not created by this object; set spec.adopt: true to take it over",
                observed.remote_id
            ),
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
