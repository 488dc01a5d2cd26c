//! The federation parts of a Keystone identity provider, remotely: reading its protocols and
//! their mappings, and bringing them to the desired ones after the identity provider itself
//! (mapping, then protocol; deletion in reverse). See [`super::federation`] for what this
//! object may write or delete.
use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::json;

use crate::backend::http::{check_returned_id, require_usable_id};
use crate::backend::{ObservedProvider, ProviderConfig, RemoteHealth};
use crate::error::{RemoteError, RemoteErrorKind};

use super::federation::{FederationRecord, MappingConfig, ProtocolConfig, Rules, rule_index};
use super::*;

impl KeystoneClient {
    fn mapping_url(&self, id: &str) -> url::Url {
        self.rest.url(&["OS-FEDERATION", "mappings", id])
    }

    fn protocol_url(&self, idp: &str, protocol: Option<&str>) -> url::Url {
        let mut segments = vec!["OS-FEDERATION", "identity_providers", idp, "protocols"];
        segments.extend(protocol);
        self.rest.url(&segments)
    }

    /// `GET /v3/OS-FEDERATION/mappings/{id}`: its rules; None on 404.
    pub async fn get_mapping(&self, id: &str) -> Result<Option<Rules>, RemoteError> {
        require_usable_id(BACKEND, "get mapping", id)?;
        let url = self.mapping_url(id);
        let reply = self
            .call("get mapping", true, Method::GET, url, None)
            .await?;
        let Some(found) = reply.json_or_none::<OneMappingWire>()? else {
            return Ok(None);
        };
        let mapping = found
            .mapping
            .ok_or_else(|| reply.bad_response("the response has no mapping object"))?;
        check_returned_id(BACKEND, "get mapping", Some(id), &mapping.id)?;
        Ok(Some(Rules::new(mapping.rules)))
    }

    /// `PUT` (create, not retried: a repeat would be a 409) or `PATCH` of mapping `id`.
    async fn write_mapping(
        &self,
        id: &str,
        rules: &Rules,
        create: bool,
    ) -> Result<(), RemoteError> {
        let (operation, method) = match create {
            true => ("create mapping", Method::PUT),
            false => ("update mapping", Method::PATCH),
        };
        require_usable_id(BACKEND, operation, id)?;
        let body = json!({"mapping": {"rules": rules.value()}});
        let url = self.mapping_url(id);
        let reply = self
            .call(operation, !create, method, url, Some(&body))
            .await?;
        reply.ok().map_err(|e| invalid_rules(e, id))
    }

    /// `DELETE /v3/OS-FEDERATION/mappings/{id}`; false when it was already gone.
    pub async fn delete_mapping(&self, id: &str) -> Result<bool, RemoteError> {
        require_usable_id(BACKEND, "delete mapping", id)?;
        let url = self.mapping_url(id);
        self.call("delete mapping", true, Method::DELETE, url, None)
            .await?
            .existed()
    }

    /// `GET …/identity_providers/{idp}/protocols`; empty when the provider is gone.
    pub async fn list_protocols(&self, idp: &str) -> Result<Vec<ProtocolWire>, RemoteError> {
        let url = self.protocol_url(idp, None);
        let reply = self
            .call("list protocols", true, Method::GET, url, None)
            .await?;
        let list = reply
            .json_or_none::<ProtocolListWire>()?
            .unwrap_or_default();
        for protocol in &list.protocols {
            check_returned_id(BACKEND, "list protocols", None, &protocol.id)?;
        }
        Ok(list.protocols)
    }

    /// `PUT` (create) or `PATCH` of protocol `protocol` of `idp`, bound to `mapping_id`.
    async fn write_protocol(
        &self,
        idp: &str,
        protocol: &str,
        mapping_id: &str,
        create: bool,
    ) -> Result<(), RemoteError> {
        let (operation, method) = match create {
            true => ("create protocol", Method::PUT),
            false => ("update protocol", Method::PATCH),
        };
        require_usable_id(BACKEND, operation, protocol)?;
        let body = json!({"protocol": {"mapping_id": mapping_id}});
        let url = self.protocol_url(idp, Some(protocol));
        let reply = self
            .call(operation, !create, method, url, Some(&body))
            .await?;
        let written = reply.json::<OneProtocolWire>()?.protocol;
        let written = written.ok_or_else(|| reply.bad_response("the response has no protocol"))?;
        check_returned_id(BACKEND, operation, Some(protocol), &written.id)
    }

    /// `DELETE …/identity_providers/{idp}/protocols/{protocol}`; false when already gone.
    pub async fn delete_protocol(&self, idp: &str, protocol: &str) -> Result<bool, RemoteError> {
        require_usable_id(BACKEND, "delete protocol", protocol)?;
        let url = self.protocol_url(idp, Some(protocol));
        self.call("delete protocol", true, Method::DELETE, url, None)
            .await?
            .existed()
    }

    /// Reads the protocols of `observed` and the mappings `desired` names (without `desired`,
    /// as `export` asks: the mappings the protocols are bound to) into it, and mirrors them and
    /// `record` into its status.
    pub(super) async fn read_federation(
        &self,
        desired: Option<&KeystoneConfig>,
        record: &FederationRecord,
        observed: &mut ObservedProvider,
    ) -> Result<(), RemoteError> {
        // An identity provider that declares no protocol, and never did, costs no read more
        // than itself (a resync stays one page of the batch list per connection).
        if desired.is_some_and(|d| declares_nothing(d, record)) {
            return Ok(());
        }
        let listed = self.list_protocols(&observed.remote_id).await?;
        let mut protocols: BTreeMap<String, ProtocolConfig> = listed
            .iter()
            .map(|p| (p.id.clone(), bound_to(&p.mapping_id)))
            .collect();
        let wanted: BTreeMap<String, String> = match desired {
            Some(d) => d.protocols.iter().filter_map(desired_mapping_id).collect(),
            None => listed
                .iter()
                .map(|p| (p.id.clone(), p.mapping_id.clone()))
                .collect(),
        };
        for (protocol, mapping_id) in wanted {
            let rules = self.get_mapping(&mapping_id).await?;
            let entry = protocols.entry(protocol).or_default();
            entry.mapping = rules.map(|rules| MappingConfig {
                id: mapping_id,
                rules,
            });
        }
        let stale = match desired {
            Some(d) => self.stale_mappings(d, record).await?,
            None => BTreeSet::new(),
        };
        let record = observed_record(record, desired, &protocols, &stale);
        if let Some(status) = observed.state.keystone.as_mut() {
            status.protocols = listed
                .iter()
                .map(|p| (p.id.clone(), protocol_status(p)))
                .collect();
            status.created_mappings = record.created_mappings.into_iter().collect();
            status.managed_protocols = record.managed_protocols.into_iter().collect();
        }
        if let ProviderConfig::Keystone(config) = &mut observed.config {
            config.protocols = protocols;
            config.stale_mappings = stale;
        }
        Ok(())
    }

    /// Mappings this object created that no desired protocol uses and that still exist.
    async fn stale_mappings(
        &self,
        desired: &KeystoneConfig,
        record: &FederationRecord,
    ) -> Result<BTreeSet<String>, RemoteError> {
        let used = used_mapping_ids(desired);
        let mut stale = BTreeSet::new();
        for id in record.created_mappings.difference(&used) {
            if self.get_mapping(id).await?.is_some() {
                stale.insert(id.clone());
            }
        }
        Ok(stale)
    }

    /// Brings the protocols and mappings of `idp`, now as `current`, to `desired`: each
    /// mapping before the protocol bound to it, then the protocols no longer declared, then
    /// the mappings this object created that nothing declared uses. Returns the new record.
    pub(super) async fn write_federation(
        &self,
        idp: &str,
        current: &KeystoneConfig,
        desired: &KeystoneConfig,
    ) -> Result<FederationRecord, RemoteError> {
        let mut record = desired.record.clone();
        for (protocol, want) in &desired.protocols {
            let have = current.protocols.get(protocol).cloned().unwrap_or_default();
            self.write_protocol_and_mapping(idp, protocol, &have, want, &mut record)
                .await?;
            record.managed_protocols.insert(protocol.clone());
        }
        for (protocol, have) in &current.protocols {
            let undeclared = !desired.protocols.contains_key(protocol);
            if undeclared && record.managed_protocols.contains(protocol) {
                if have.mapping_id.is_some() {
                    self.delete_protocol(idp, protocol).await?;
                }
                record.managed_protocols.remove(protocol);
            }
        }
        let used = used_mapping_ids(desired);
        for id in record.created_mappings.clone().difference(&used) {
            self.delete_mapping(id).await?;
            record.created_mappings.remove(id);
        }
        Ok(record)
    }

    /// One protocol: its mapping first (created, or its rules restored), then the binding. A
    /// mapping created here is deleted again when the protocol write fails, so no mapping of
    /// ours is left unrecorded.
    async fn write_protocol_and_mapping(
        &self,
        idp: &str,
        protocol: &str,
        have: &ProtocolConfig,
        want: &ProtocolConfig,
        record: &mut FederationRecord,
    ) -> Result<(), RemoteError> {
        let Some(mapping) = want.mapping.as_ref() else {
            return Ok(());
        };
        let bound_here = have.mapping_id.as_deref() == Some(mapping.id.as_str());
        let created = match &have.mapping {
            None => {
                self.write_mapping(&mapping.id, &mapping.rules, true)
                    .await?;
                record.created_mappings.insert(mapping.id.clone());
                true
            }
            Some(found) => {
                let ours =
                    bound_here || record.adopt || record.created_mappings.contains(&mapping.id);
                if !ours {
                    return Err(mapping_exists(&mapping.id));
                }
                if found.rules != mapping.rules {
                    self.write_mapping(&mapping.id, &mapping.rules, false)
                        .await?;
                }
                false
            }
        };
        if bound_here {
            return Ok(());
        }
        let create = have.mapping_id.is_none();
        let written = self
            .write_protocol(idp, protocol, &mapping.id, create)
            .await;
        if let (Err(_), true) = (&written, created)
            && self.delete_mapping(&mapping.id).await.is_ok()
        {
            record.created_mappings.remove(&mapping.id);
        }
        written
    }

    /// After a create: the federation parts, written at once. A failure does not fail the
    /// create (the identity provider exists and is ours): the provider is reported
    /// progressing, and the next reconcile writes the parts or reports why it cannot.
    pub(super) async fn complete_create(
        &self,
        created: ObservedProvider,
        desired: &KeystoneConfig,
    ) -> ObservedProvider {
        if desired.protocols.is_empty() {
            return created;
        }
        // Mappings are independent of the new identity provider: one may already exist.
        let mut current = created.clone();
        let written = match self
            .read_federation(Some(desired), &desired.record, &mut current)
            .await
        {
            Ok(()) => self.update_federation(&current, desired).await,
            Err(error) => Err(error),
        };
        match written {
            Ok(updated) => updated,
            Err(error) => ObservedProvider {
                health: RemoteHealth::Progressing {
                    reason: REASON_FEDERATION_PENDING,
                    message: format!(
                        "the identity provider was created; its protocols and mappings are not written yet: {error}"
                    ),
                },
                ..created
            },
        }
    }

    /// Writes the federation parts of `current` (a provider just read or written) to
    /// `desired`, then reads them again for the status.
    pub(super) async fn update_federation(
        &self,
        current: &ObservedProvider,
        desired: &KeystoneConfig,
    ) -> Result<ObservedProvider, RemoteError> {
        let ProviderConfig::Keystone(config) = &current.config else {
            return Ok(current.clone());
        };
        let record = self
            .write_federation(&current.remote_id, config, desired)
            .await?;
        let mut updated = current.clone();
        self.read_federation(Some(desired), &record, &mut updated)
            .await?;
        Ok(updated)
    }

    /// Deletes the protocols `desired` declares or declared, then the mappings this object
    /// created: what deleting the identity provider (next) would leave behind, in reverse
    /// order of creation.
    pub(super) async fn delete_federation(
        &self,
        idp: &str,
        desired: &KeystoneConfig,
    ) -> Result<(), RemoteError> {
        if declares_nothing(desired, &desired.record) {
            return Ok(());
        }
        for protocol in self.list_protocols(idp).await? {
            let declared = desired.protocols.contains_key(&protocol.id)
                || desired.record.managed_protocols.contains(&protocol.id);
            if declared {
                self.delete_protocol(idp, &protocol.id).await?;
            }
        }
        for id in &desired.record.created_mappings {
            self.delete_mapping(id).await?;
        }
        Ok(())
    }
}

/// Whether `desired` declares no protocol and `record` shows none was ever declared or created.
fn declares_nothing(desired: &KeystoneConfig, record: &FederationRecord) -> bool {
    desired.protocols.is_empty()
        && record.created_mappings.is_empty()
        && record.managed_protocols.is_empty()
}

fn bound_to(mapping_id: &str) -> ProtocolConfig {
    ProtocolConfig {
        mapping_id: Some(mapping_id.to_owned()),
        mapping: None,
    }
}

fn desired_mapping_id((protocol, config): (&String, &ProtocolConfig)) -> Option<(String, String)> {
    let id = config.mapping.as_ref()?.id.clone();
    Some((protocol.clone(), id))
}

fn used_mapping_ids(desired: &KeystoneConfig) -> BTreeSet<String> {
    desired
        .protocols
        .values()
        .filter_map(|p| p.mapping.as_ref().map(|m| m.id.clone()))
        .collect()
}

/// What status records after a read: the mappings this object created that still exist (a
/// desired one under its id, or a stale one), and the protocols it declared (declared now or
/// before) that exist.
fn observed_record(
    record: &FederationRecord,
    desired: Option<&KeystoneConfig>,
    protocols: &BTreeMap<String, ProtocolConfig>,
    stale: &BTreeSet<String>,
) -> FederationRecord {
    let existing: BTreeSet<&String> = protocols
        .values()
        .filter_map(|p| p.mapping.as_ref().map(|m| &m.id))
        .collect();
    let declared = |p: &String| desired.is_some_and(|d| d.protocols.contains_key(p));
    FederationRecord {
        adopt: record.adopt,
        created_mappings: record
            .created_mappings
            .iter()
            .filter(|m| existing.contains(m) || stale.contains(*m))
            .cloned()
            .collect(),
        managed_protocols: protocols
            .iter()
            .filter(|(_, c)| c.mapping_id.is_some())
            .map(|(p, _)| p)
            .filter(|p| record.managed_protocols.contains(*p) || declared(p))
            .cloned()
            .collect(),
    }
}

/// The refusal of a mapping this object did not create.
fn mapping_exists(id: &str) -> RemoteError {
    RemoteError::transport(
        BACKEND,
        "create mapping",
        RemoteErrorKind::AlreadyExists,
        format!(
            "a mapping with id {id:?} already exists and was not created by this SecurityProvider; set spec.adopt: true to take it over, or choose another keystone.protocols[*].mapping.id"
        ),
    )
}

/// A 400 for the rules names the mapping and, when Keystone says it, the rule.
fn invalid_rules(mut error: RemoteError, id: &str) -> RemoteError {
    if error.kind == RemoteErrorKind::InvalidConfiguration {
        let rule = rule_index(&error.message).map_or(String::new(), |i| format!(" rule {i}:"));
        error.message = format!("mapping {id:?}:{rule} {}", error.message);
    }
    error
}
