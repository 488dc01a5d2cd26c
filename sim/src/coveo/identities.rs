//! Security identities of one provider, as the Push API fills an EXPANDED provider
//! (reference §1.4, "Related Push API endpoints"), and what a refresh does to them.
//!
//! * `PUT …/permissions` adds or updates one identity (user, group or virtual group) with its
//!   group `members` and `wellKnowns`; `PUT …/mappings` adds one identity with aliases
//!   (`mappings`, typically to the Email Security Provider); `DELETE …/permissions` disables
//!   one. Like the real API these answer 202 and process later: a pushed identity is
//!   `NOT_UPDATED` until the next refresh of its provider.
//! * A refresh processes every identity that is not `DISABLED`: one whose members or mappings
//!   name a provider that does not exist in the organization is `IN_ERROR`
//!   (`lastUpdateResult` `SECURITY_PROVIDER_IS_UNAVAILABLE`), every other one `UP_TO_DATE`.
//!   Disabled identities stay listed as `DISABLED` (reference §1.6). Our assumption: the real
//!   service resolves more (unknown members, expansion loops), but a mapping to a provider that
//!   is not there is the common way identities end up in error.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;

pub(super) const UP_TO_DATE: &str = "UP_TO_DATE";
pub(super) const NOT_UPDATED: &str = "NOT_UPDATED";
pub(super) const IN_ERROR: &str = "IN_ERROR";
pub(super) const DISABLED: &str = "DISABLED";

/// Identity types the Push API accepts (platform-client `PermissionIdentityType`).
const IDENTITY_TYPES: &[&str] = &["USER", "GROUP", "VIRTUAL_GROUP", "UNKNOWN"];

/// The Push API body of `PUT …/permissions` and `PUT …/mappings`. Keys are camelCase in the
/// docs; the C# SDK's PascalCase is accepted too.
#[derive(Debug, Deserialize)]
pub(super) struct IdentityBody {
    #[serde(alias = "Identity")]
    identity: IdentityRef,
    #[serde(default, alias = "Members")]
    members: Vec<IdentityRef>,
    #[serde(default, alias = "Mappings")]
    mappings: Vec<IdentityRef>,
    #[serde(default, rename = "wellKnowns", alias = "WellKnowns")]
    well_knowns: Vec<IdentityRef>,
}

/// `{name, type, provider?, additionalInfo?}`.
#[derive(Clone, Debug, Deserialize)]
pub(super) struct IdentityRef {
    #[serde(alias = "Name")]
    name: String,
    #[serde(rename = "type", alias = "Type", default = "user_type")]
    identity_type: String,
    #[serde(default, alias = "Provider")]
    provider: Option<String>,
}

fn user_type() -> String {
    "USER".to_owned()
}

/// The body of `DELETE …/permissions`: the identity to disable.
#[derive(Debug, Deserialize)]
pub(super) struct DisableBody {
    #[serde(alias = "Identity")]
    identity: IdentityRef,
}

/// Which endpoint a body came from: `mappings` must carry at least one mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PushKind {
    Permissions,
    Mappings,
}

/// One identity of a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Identity {
    state: &'static str,
    last_update_result: &'static str,
    /// Providers named by members, mappings and well-knowns (this provider when unnamed).
    references: BTreeSet<String>,
}

/// Identities keyed by (name, type): the identity key of the Push API.
#[derive(Clone, Debug, Default)]
pub(super) struct Identities {
    by_key: BTreeMap<(String, String), Identity>,
}

fn check_identity(identity: &IdentityRef) -> Result<(), ApiError> {
    if identity.name.trim().is_empty() {
        return Err(ApiError::invalid_json("The identity 'name' is required."));
    }
    if !IDENTITY_TYPES.contains(&identity.identity_type.as_str()) {
        return Err(ApiError::invalid_json(format!(
            "'{}' is not a valid identity type; use one of {}.",
            identity.identity_type,
            IDENTITY_TYPES.join(", ")
        )));
    }
    Ok(())
}

pub(super) fn parse_push(body: &[u8], kind: PushKind) -> Result<IdentityBody, ApiError> {
    let parsed: IdentityBody = serde_json::from_slice(body)
        .map_err(|error| ApiError::invalid_json(format!("Invalid security identity: {error}")))?;
    check_identity(&parsed.identity)?;
    for other in parsed
        .members
        .iter()
        .chain(&parsed.mappings)
        .chain(&parsed.well_knowns)
    {
        check_identity(other)?;
    }
    if kind == PushKind::Mappings && parsed.mappings.is_empty() {
        return Err(ApiError::invalid_json(
            "A mapping needs at least one entry in 'mappings'.",
        ));
    }
    Ok(parsed)
}

pub(super) fn parse_disable(body: &[u8]) -> Result<DisableBody, ApiError> {
    let parsed: DisableBody = serde_json::from_slice(body)
        .map_err(|error| ApiError::invalid_json(format!("Invalid security identity: {error}")))?;
    check_identity(&parsed.identity)?;
    Ok(parsed)
}

impl Identities {
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Adds or replaces an identity; it waits as `NOT_UPDATED` for the next refresh (a
    /// disabled identity pushed again is enabled again).
    pub fn push(&mut self, provider_id: &str, body: IdentityBody) {
        let references = body
            .members
            .iter()
            .chain(&body.mappings)
            .chain(&body.well_knowns)
            .map(|other| {
                other
                    .provider
                    .clone()
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| provider_id.to_owned())
            })
            .collect();
        let key = (body.identity.name, body.identity.identity_type);
        self.by_key.insert(
            key,
            Identity {
                state: NOT_UPDATED,
                last_update_result: "NONE",
                references,
            },
        );
    }

    /// Disables an identity; an unknown one is ignored (the API answers 202 regardless).
    pub fn disable(&mut self, body: &DisableBody) {
        let key = (
            body.identity.name.clone(),
            body.identity.identity_type.clone(),
        );
        if let Some(identity) = self.by_key.get_mut(&key) {
            identity.state = DISABLED;
        }
    }

    /// Processes every identity that is not disabled (see the module docs); `exists` tells
    /// whether a provider id exists in the organization. Returns how many were processed.
    pub fn refresh(&mut self, exists: impl Fn(&str) -> bool) -> i64 {
        let mut processed = 0;
        for identity in self.by_key.values_mut() {
            if identity.state == DISABLED {
                continue;
            }
            processed += 1;
            let broken = identity.references.iter().any(|p| !exists(p));
            (identity.state, identity.last_update_result) = if broken {
                (IN_ERROR, "SECURITY_PROVIDER_IS_UNAVAILABLE")
            } else {
                (UP_TO_DATE, "SUCCESS")
            };
        }
        processed
    }

    /// Identity counts per state, every reported state present.
    pub fn by_state(&self, reported: &[&str]) -> BTreeMap<String, i64> {
        let mut counts: BTreeMap<String, i64> =
            reported.iter().map(|s| ((*s).to_owned(), 0)).collect();
        for identity in self.by_key.values() {
            *counts.entry(identity.state.to_owned()).or_insert(0) += 1;
        }
        counts
    }

    /// The identities as `DetailedSecurityCacheMemberModel`-like JSON, in key order.
    pub fn members_json(&self) -> Vec<Value> {
        self.by_key
            .iter()
            .map(|((name, identity_type), identity)| {
                json!({
                    "name": name,
                    "type": identity_type,
                    "state": identity.state,
                    "lastUpdateResult": identity.last_update_result,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(identities: &mut Identities, body: Value) {
        let body = parse_push(body.to_string().as_bytes(), PushKind::Permissions).expect("valid");
        identities.push("p", body);
    }

    #[test]
    fn a_refresh_puts_broken_mappings_in_error_and_keeps_disabled_ones() {
        let mut identities = Identities::default();
        push(
            &mut identities,
            json!({"identity": {"name": "a", "type": "USER"},
                   "mappings": [{"name": "a@x", "type": "USER", "provider": "Email Security Provider"}]}),
        );
        push(
            &mut identities,
            json!({"identity": {"name": "b", "type": "USER"},
                   "mappings": [{"name": "b@x", "type": "USER", "provider": "gone"}]}),
        );
        push(
            &mut identities,
            json!({"identity": {"name": "g", "type": "GROUP"}, "members": [{"name": "a", "type": "USER"}]}),
        );
        push(
            &mut identities,
            json!({"identity": {"name": "c", "type": "USER"}}),
        );
        let disable = parse_disable(br#"{"identity": {"name": "c", "type": "USER"}}"#).unwrap();
        identities.disable(&disable);
        let states = [UP_TO_DATE, DISABLED, NOT_UPDATED, IN_ERROR];
        assert_eq!(identities.by_state(&states)[NOT_UPDATED], 3);
        let processed = identities.refresh(|p| p == "p" || p == "Email Security Provider");
        assert_eq!(processed, 3);
        let counts = identities.by_state(&states);
        assert_eq!(
            (counts[UP_TO_DATE], counts[IN_ERROR], counts[DISABLED]),
            (2, 1, 1)
        );
    }

    #[test]
    fn bad_bodies_are_rejected() {
        assert!(
            parse_push(
                br#"{"identity": {"name": "", "type": "USER"}}"#,
                PushKind::Permissions
            )
            .is_err()
        );
        assert!(
            parse_push(
                br#"{"identity": {"name": "a", "type": "ROBOT"}}"#,
                PushKind::Permissions
            )
            .is_err()
        );
        assert!(
            parse_push(
                br#"{"identity": {"name": "a", "type": "USER"}}"#,
                PushKind::Mappings
            )
            .is_err()
        );
        assert!(parse_push(b"[]", PushKind::Permissions).is_err());
    }
}
