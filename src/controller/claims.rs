//! At most one owner per remote provider. A claim is a Lease in the operator's namespace whose
//! name is derived from the canonical remote system and the provider's id; an object takes it
//! with a create-if-absent (the API server arbitrates: of two objects racing, one create wins
//! and the other gets 409) before its first remote write and before it adopts, and gives it
//! back when its deletion is done. Claims are watched (metadata only), so the check that every
//! reconcile makes costs no API call; only taking a claim, or contesting one whose holder may be
//! gone, reaches the API server.
use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PartialObjectMeta, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

mod cache;
use cache::{ClaimCache, ClaimRecord, claim_cache};

use crate::api::SecurityProvider;
use crate::api::remote_system::{canonical_endpoint, canonical_scope};
use crate::api::security_provider::Ownership;
use crate::error::Error;

/// Label on every claim (the watch selects on it).
pub const CLAIM_LABEL: &str = "secprov.dev/claim";
/// `namespace/name` of the SecurityProvider holding the claim.
pub const HOLDER_ANNOTATION: &str = "secprov.dev/claim-holder";
/// uid of the SecurityProvider holding the claim.
pub const HOLDER_UID_ANNOTATION: &str = "secprov.dev/claim-holder-uid";
/// The canonical remote system (see [`Ownership::system_key`]).
pub const SYSTEM_ANNOTATION: &str = "secprov.dev/claim-system";
/// The provider id claimed (the id the provider is looked up by).
pub const PROVIDER_ANNOTATION: &str = "secprov.dev/claim-provider";
/// The canonical organization or tenant of the remote system (empty for a backend without one).
pub const SCOPE_ANNOTATION: &str = "secprov.dev/claim-scope";
/// The canonical endpoint of the remote system.
pub const ENDPOINT_ANNOTATION: &str = "secprov.dev/claim-endpoint";
/// When the claim was made, to the microsecond (metadata.creationTimestamp has seconds only,
/// too coarse to order two claims made in one second).
pub const CLAIMED_AT_ANNOTATION: &str = "secprov.dev/claimed-at";

type ClaimMeta = PartialObjectMeta<Lease>;

/// Who holds a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// The object asking, since its claim was made (creation time, then name).
    Us(ClaimAge),
    /// Another live SecurityProvider, `namespace/name`.
    Other(String),
}

/// The claims of one installation: their namespace's Leases and a cache of them.
#[derive(Clone)]
pub struct Claims {
    api: Api<Lease>,
    namespace: String,
    cache: ClaimCache,
    client: Client,
}

/// The name of the claim on `provider` in `system`: a digest, so any spelling of either fits
/// in a Lease name and no name leaks through `kubectl get leases`.
pub fn claim_name(system: &Ownership, provider: &str) -> String {
    let key = format!("{}\n{provider}", system.system_key());
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("secprov-claim-{hex}")
}

impl Claims {
    /// Claims kept in `namespace`, with the future that keeps their cache filled (run it for
    /// the life of the controller).
    pub fn new(
        client: Client,
        namespace: &str,
    ) -> (Claims, impl std::future::Future<Output = ()> + Send + use<>) {
        let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let (cache, writer) = claim_cache();
        let config = watcher::Config::default().labels(&format!("{CLAIM_LABEL}=true"));
        // An Api of PartialObjectMeta watches metadata only; the cache keeps a small record
        // of each claim (cache.rs).
        let metadata: Api<ClaimMeta> = Api::namespaced(client.clone(), namespace);
        let pump = watcher::watcher(metadata, config)
            .default_backoff()
            .for_each(move |event| {
                match event {
                    Ok(event) => writer.apply(&event),
                    Err(error) => warn!(%error, "watching claims failed; retrying"),
                }
                futures::future::ready(())
            });
        let claims = Claims {
            api,
            namespace: namespace.to_owned(),
            cache,
            client,
        };
        (claims, pump)
    }

    /// Takes the claim on `provider` in `system` for `sp`, or says who holds it. A claim whose
    /// holder no longer exists (deleted without its finalizer, or recreated under the same
    /// name) is stale: it is removed (only if unchanged since judged) and the take retried.
    pub async fn acquire(
        &self,
        sp: &SecurityProvider,
        system: &Ownership,
        provider: &str,
    ) -> Result<Holder, Error> {
        let name = claim_name(system, provider);
        let mut found = self.cache.get(&name).map(|c| (*c).clone());
        for _ in 0..3 {
            if let Some(existing) = found.take() {
                match self.judge(sp, &existing).await? {
                    Judged::Held(holder) => return Ok(holder),
                    Judged::Stale => self.remove_stale(&name, &existing).await?,
                }
            }
            let body = claim(
                sp,
                system,
                provider,
                &name,
                k8s_openapi::jiff::Timestamp::now(),
            );
            match self.api.create(&PostParams::default(), &body).await {
                Ok(created) => {
                    info!(claim = %name, system = %system.system_key(), provider, "claimed remote provider");
                    return Ok(Holder::Us(claim_age(&record_of(created))));
                }
                // Taken meanwhile (or the cache lags): judge what the API server has.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    found = self.api.get_opt(&name).await?.map(record_of);
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::ClaimContested(format!(
            "the claim on provider {provider:?} in {} changed hands during three attempts to take it; retrying",
            system.system_key()
        )))
    }

    /// Whether `claim` is held by `sp`, by another live object, or by nobody alive.
    async fn judge(&self, sp: &SecurityProvider, claim: &ClaimRecord) -> Result<Judged, Error> {
        let holder_uid = claim.holder_uid.as_deref();
        if claim.held_by(sp.uid().as_deref()) {
            return Ok(Judged::Held(Holder::Us(claim_age(claim))));
        }
        let holder = claim.holder.clone().unwrap_or_default();
        let Some((namespace, name)) = holder.split_once('/') else {
            return Ok(Judged::Stale);
        };
        let api: Api<SecurityProvider> = Api::namespaced(self.client.clone(), namespace);
        let alive = api
            .get_metadata_opt(name)
            .await?
            .is_some_and(|found| found.uid().as_deref() == holder_uid);
        Ok(if alive {
            Judged::Held(Holder::Other(holder))
        } else {
            Judged::Stale
        })
    }

    /// Deletes a stale claim, only if it is still the one judged (its uid as a precondition).
    async fn remove_stale(&self, name: &str, stale: &ClaimRecord) -> Result<(), Error> {
        info!(claim = %name, holder = ?stale.holder, "removing a claim whose holder is gone");
        self.delete_if_unchanged(name, stale.uid.clone()).await
    }

    async fn delete_if_unchanged(&self, name: &str, uid: Option<String>) -> Result<(), Error> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Another live object holding the claim on `provider` in `system`, as the cache shows it
    /// (a deletion asks before it deletes remotely; it takes nothing).
    pub async fn held_by_other(
        &self,
        sp: &SecurityProvider,
        system: &Ownership,
        provider: &str,
    ) -> Result<Option<String>, Error> {
        let name = claim_name(system, provider);
        // A deletion acts on what the API server has, not on a cache that may lag.
        let found = self.cached_or_read(&name).await?;
        let Some(found) = found else {
            return Ok(None);
        };
        Ok(match self.judge(sp, &found).await? {
            Judged::Held(Holder::Other(holder)) => Some(holder),
            _ => None,
        })
    }

    /// The age of `sp`'s own claim on `provider` in `system` (the API server's copy when the
    /// cache does not show it), or None when it holds none.
    pub async fn own_age(
        &self,
        sp: &SecurityProvider,
        system: &Ownership,
        provider: &str,
    ) -> Result<Option<ClaimAge>, Error> {
        let name = claim_name(system, provider);
        let claim = self.cached_or_read(&name).await?;
        Ok(claim
            .filter(|c| c.held_by(sp.uid().as_deref()))
            .map(|c| claim_age(&c)))
    }

    /// Gives back every claim `sp` holds (in any remote system: a connection edited since a
    /// claim was taken names another system). Claims of other objects stay.
    pub async fn release(&self, sp: &SecurityProvider) -> Result<(), Error> {
        let Some(uid) = sp.uid() else {
            return Ok(());
        };
        for claim in self.cache.held_by(&uid) {
            self.delete_if_unchanged(&claim.name, claim.uid.clone())
                .await?;
        }
        Ok(())
    }

    /// Another live object that owns `provider` in the same organization or tenant, reached
    /// through another name of the same endpoint (`localhost` for `127.0.0.1`, two DNS names of
    /// one load balancer), so this object must not manage it. Decided first by the evidence on
    /// the provider (`token_uid`, left by whoever created or last wrote it): ours means ours;
    /// another claimant's means theirs. Without evidence of a claimant, by the claims' age
    /// among the claims whose endpoint is the same by address (same scheme, port and path, host
    /// names resolving to a common address).
    pub async fn alias_owner(
        &self,
        sp: &SecurityProvider,
        system: &Ownership,
        provider: &str,
        token_uid: Option<&str>,
        own_age: Option<&ClaimAge>,
    ) -> Result<Option<String>, Error> {
        let uid = sp.uid();
        if token_uid.is_some() && token_uid == uid.as_deref() {
            return Ok(None);
        }
        let own_name = claim_name(system, provider);
        let scope = canonical_scope(&system.scope);
        let mut candidates: Vec<_> = self
            .cache
            .on_provider(&scope, provider)
            .into_iter()
            .filter(|claim| claim.name != own_name && !claim.held_by(uid.as_deref()))
            .collect();
        // The claimant whose evidence the provider carries first, then the oldest.
        candidates.sort_by_key(|claim| {
            let named = claim.holder_uid.as_deref() == token_uid;
            (!named, claim_age(claim))
        });
        for claim in candidates {
            let named_by_evidence = token_uid.is_some() && claim.holder_uid.as_deref() == token_uid;
            let older = own_age.is_none_or(|own| claim_age(&claim) < *own);
            let theirs = claim.endpoint.as_deref().unwrap_or_default();
            let same_provider = named_by_evidence
                || (older && same_endpoint_by_address(&system.endpoint, theirs).await);
            if !same_provider {
                continue;
            }
            let judged = self.judge(sp, &claim).await?;
            tracing::debug!(claim = %claim.name, named_by_evidence, older, stale = matches!(judged, Judged::Stale), "a claim on the same provider under another spelling of the endpoint");
            match judged {
                Judged::Held(Holder::Other(holder)) => return Ok(Some(holder)),
                Judged::Held(Holder::Us(_)) => {}
                // Its holder is gone: remove it so it is not judged again at every reconcile.
                Judged::Stale => self.remove_stale(&claim.name, &claim).await?,
            }
        }
        Ok(None)
    }

    /// Gives back the claim `sp` holds on `provider` in `system` (it found an older owner).
    pub async fn give_back(
        &self,
        sp: &SecurityProvider,
        system: &Ownership,
        provider: &str,
    ) -> Result<(), Error> {
        let name = claim_name(system, provider);
        match self.cache.get(&name) {
            Some(claim) if claim.held_by(sp.uid().as_deref()) => {
                self.delete_if_unchanged(&name, claim.uid.clone()).await
            }
            // Not cached yet (taken a moment ago): read it to delete only our own.
            _ => match self.api.get_opt(&name).await? {
                Some(lease)
                    if lease.annotations().get(HOLDER_UID_ANNOTATION) == sp.uid().as_ref() =>
                {
                    self.delete_if_unchanged(&name, lease.uid()).await
                }
                _ => Ok(()),
            },
        }
    }

    /// Gives back the claims `sp` holds other than the one on `provider` in `system` (a
    /// confirmed change of remote system, a respelled endpoint, a renamed provider).
    pub async fn release_others(
        &self,
        sp: &SecurityProvider,
        system: &Ownership,
        provider: &str,
    ) -> Result<(), Error> {
        let keep = claim_name(system, provider);
        let Some(uid) = sp.uid() else {
            return Ok(());
        };
        for claim in self.cache.held_by(&uid) {
            if claim.name != keep {
                self.delete_if_unchanged(&claim.name, claim.uid.clone())
                    .await?;
            }
        }
        Ok(())
    }

    /// Resolves once the claims are listed: until then the cache cannot show another owner.
    pub async fn ready(&self) {
        self.cache.listed().await;
    }

    /// The namespace claims live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The claim `name` from the cache, else as the API server has it (a claim taken a moment
    /// ago may not be cached yet).
    async fn cached_or_read(&self, name: &str) -> Result<Option<ClaimRecord>, Error> {
        match self.cache.get(name) {
            Some(cached) => Ok(Some((*cached).clone())),
            None => Ok(self.api.get_opt(name).await?.map(record_of)),
        }
    }
}

/// How long resolving a host name may take when comparing two endpoints.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether two endpoints that differ as written are one endpoint under two host names: same
/// scheme, port and path, and host names that resolve to at least one common address. Only
/// asked when another object claimed the same provider id in the same partition, so rarely.
async fn same_endpoint_by_address(ours: &str, theirs: &str) -> bool {
    let (Ok(a), Ok(b)) = (
        url::Url::parse(&canonical_endpoint(ours)),
        url::Url::parse(&canonical_endpoint(theirs)),
    ) else {
        return false;
    };
    let same_route = a.scheme() == b.scheme()
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path() == b.path();
    let (Some(port), true) = (a.port_or_known_default(), same_route) else {
        return false;
    };
    let (Some(host_a), Some(host_b)) = (a.host_str(), b.host_str()) else {
        return false;
    };
    let addresses = |host: &str| {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        async move {
            match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await
            {
                Ok(Ok(found)) => found.map(|addr| addr.ip()).collect::<Vec<_>>(),
                _ => Vec::new(),
            }
        }
    };
    let (ours, theirs) = futures::join!(addresses(host_a), addresses(host_b));
    ours.iter().any(|ip| theirs.contains(ip))
}

/// The record of a Lease read or created directly (not through the cache).
fn record_of(lease: Lease) -> ClaimRecord {
    ClaimRecord::of(&lease.metadata)
}

/// What a claim found says.
enum Judged {
    Held(Holder),
    Stale,
}

/// When a claim was made: creation time, then name (a total order, so two objects never both
/// think their claim is the older one).
pub type ClaimAge = (Option<k8s_openapi::jiff::Timestamp>, String);

fn claim_age(claim: &ClaimRecord) -> ClaimAge {
    (claim.claimed_at, claim.name.clone())
}

/// The Lease that claims `provider` in `system` for `sp`, taken at `now`. The time is kept to
/// the nanosecond in an annotation: `creationTimestamp` has whole seconds, and two claims made
/// in one second must still be ordered by when they were taken, not by their names.
fn claim(
    sp: &SecurityProvider,
    system: &Ownership,
    provider: &str,
    name: &str,
    now: k8s_openapi::jiff::Timestamp,
) -> Lease {
    let holder = format!("{}/{}", sp.namespace().unwrap_or_default(), sp.name_any());
    let annotations = BTreeMap::from([
        (HOLDER_ANNOTATION.to_owned(), holder.clone()),
        (
            HOLDER_UID_ANNOTATION.to_owned(),
            sp.uid().unwrap_or_default(),
        ),
        (SYSTEM_ANNOTATION.to_owned(), system.system_key()),
        (PROVIDER_ANNOTATION.to_owned(), provider.to_owned()),
        (SCOPE_ANNOTATION.to_owned(), canonical_scope(&system.scope)),
        (
            ENDPOINT_ANNOTATION.to_owned(),
            canonical_endpoint(&system.endpoint),
        ),
        (CLAIMED_AT_ANNOTATION.to_owned(), now.to_string()),
    ]);
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([
                (CLAIM_LABEL.to_owned(), "true".to_owned()),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    crate::api::FIELD_MANAGER.to_owned(),
                ),
            ])),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder),
            ..LeaseSpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system(endpoint: &str, scope: &str) -> Ownership {
        Ownership {
            connection_uid: "c".into(),
            endpoint: endpoint.into(),
            scope: scope.into(),
        }
    }

    #[test]
    fn one_claim_name_for_every_spelling_of_one_system() {
        let a = claim_name(
            &system("https://Platform.cloud.coveo.com:443/", "MyOrg"),
            "idp",
        );
        let b = claim_name(&system("https://platform.cloud.coveo.com", "myorg"), "idp");
        assert_eq!(a, b);
        assert!(a.len() <= 63 && a.starts_with("secprov-claim-"), "{a}");
    }

    #[test]
    fn another_system_or_provider_is_another_claim() {
        let base = claim_name(&system("https://platform.cloud.coveo.com", "org"), "idp");
        let other_org = claim_name(&system("https://platform.cloud.coveo.com", "org2"), "idp");
        let other_id = claim_name(&system("https://platform.cloud.coveo.com", "org"), "idp2");
        let other_host = claim_name(&system("https://platform-eu.cloud.coveo.com", "org"), "idp");
        for other in [other_org, other_id, other_host] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn a_claim_names_its_holder_and_keeps_no_secret() {
        let mut sp = SecurityProvider::new(
            "idp",
            serde_json::from_value(serde_json::json!({"connectionRef": "c", "coveo": {}})).unwrap(),
        );
        sp.metadata.namespace = Some("team-a".into());
        sp.metadata.uid = Some("uid-1".into());
        let now = k8s_openapi::jiff::Timestamp::now();
        let lease = claim(&sp, &system("https://h/", "o"), "idp", "n", now);
        let annotations = lease.metadata.annotations.unwrap();
        assert_eq!(annotations[HOLDER_ANNOTATION], "team-a/idp");
        assert_eq!(annotations[HOLDER_UID_ANNOTATION], "uid-1");
        assert_eq!(annotations[SYSTEM_ANNOTATION], "https://h (o)");
        assert_eq!(
            lease.spec.unwrap().holder_identity.as_deref(),
            Some("team-a/idp")
        );
    }

    #[test]
    fn two_claims_taken_in_one_second_are_ordered_by_when_they_were_taken() {
        let mut sp = SecurityProvider::new(
            "idp",
            serde_json::from_value(serde_json::json!({"connectionRef": "c", "coveo": {}})).unwrap(),
        );
        sp.metadata.uid = Some("uid-1".into());
        let second: k8s_openapi::jiff::Timestamp = "2026-12-06T16:45:37Z".parse().unwrap();
        let at = |ms: i64| second + k8s_openapi::jiff::SignedDuration::from_millis(ms);
        // As the API server returns them: one creationTimestamp for both (whole seconds), and
        // names whose order is the opposite of the order the claims were taken in.
        let taken = |name: &str, ms: i64| {
            let mut lease = claim(&sp, &system("http://h", "o"), "idp", name, at(ms));
            lease.metadata.creation_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(second));
            record_of(lease)
        };
        let earlier = taken("secprov-claim-c2", 368);
        let later = taken("secprov-claim-0a", 620);
        assert!(claim_age(&earlier) < claim_age(&later));
        assert_eq!(claim_age(&earlier).0, Some(at(368)));
    }

    #[tokio::test]
    async fn two_names_of_one_endpoint_are_found_by_address() {
        assert!(
            same_endpoint_by_address("http://127.0.0.1:18089", "http://localhost:18089/").await
        );
        // Another port, scheme or path is another endpoint, whatever the addresses.
        for other in [
            "http://localhost:18090",
            "https://localhost:18089",
            "http://localhost:18089/other",
        ] {
            assert!(
                !same_endpoint_by_address("http://127.0.0.1:18089", other).await,
                "{other}"
            );
        }
        assert!(
            !same_endpoint_by_address("http://127.0.0.1:18089", "http://127.0.0.2:18089").await
        );
    }
}
