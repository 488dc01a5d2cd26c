//! From a ProviderConnection to a built client: which Secret keys it reads, reading them from
//! the connection's namespace, the HTTP settings, building the client, and the cache that
//! gives every reconcile of one connection version the same client.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use super::scrub::{ScrubbedBackend, Scrubber};
use super::{ProviderBackend, http};
use crate::api::provider_connection::ProviderConnectionSpec;
use crate::api::{ProviderConnection, SecretKeyRef};
use crate::error::Error;
use crate::leader::WriteFence;

/// Secret values a connection needs, keyed by (Secret name, key). Debug never prints values.
#[derive(Clone, Default)]
pub struct SecretValues(HashMap<(String, String), String>);

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl SecretValues {
    /// Records the value of one Secret key.
    pub fn insert(&mut self, reference: &SecretKeyRef, value: String) {
        self.0
            .insert((reference.name.clone(), reference.key.clone()), value);
    }

    /// The value of a Secret key, or an error naming the key (never the value).
    pub fn require(&self, reference: &SecretKeyRef) -> Result<String, String> {
        self.get(reference)
            .map(str::to_owned)
            .ok_or_else(|| missing(reference))
    }

    /// The value of a Secret key, if resolved.
    pub fn get(&self, reference: &SecretKeyRef) -> Option<&str> {
        self.0
            .get(&(reference.name.clone(), reference.key.clone()))
            .map(String::as_str)
    }
}

/// Every Secret key a connection reads: its backend block's credentials, and the CA bundle.
pub fn secret_refs(spec: &ProviderConnectionSpec) -> Vec<&SecretKeyRef> {
    let mut refs = super::backend_secret_refs(spec);
    if let Some(ca) = &spec.ca_bundle_secret_ref {
        refs.push(ca);
    }
    refs
}

/// HTTP settings of a connection, with defaults.
pub fn http_options(spec: &ProviderConnectionSpec, secrets: &SecretValues) -> HttpOptionsResult {
    let defaults = http::HttpOptions::default();
    let limits = spec.rate_limit.as_ref();
    Ok(http::HttpOptions {
        timeout: spec
            .timeout_seconds
            .map(|s| Duration::from_secs(s.into()))
            .unwrap_or(defaults.timeout),
        ca_bundle_pem: match &spec.ca_bundle_secret_ref {
            Some(r) => Some(
                secrets
                    .get(r)
                    .ok_or_else(|| missing(r))?
                    .as_bytes()
                    .to_vec(),
            ),
            None => None,
        },
        requests_per_second: limits
            .and_then(|l| l.requests_per_second)
            .unwrap_or(defaults.requests_per_second),
        burst: limits.and_then(|l| l.burst).unwrap_or(defaults.burst),
        max_concurrency: limits
            .and_then(|l| l.max_concurrency)
            .unwrap_or(defaults.max_concurrency),
        retry: defaults.retry,
        max_response_bytes: spec
            .max_response_bytes
            .map(|b| b as usize)
            .unwrap_or(defaults.max_response_bytes),
        bulk_read_deadline: defaults.bulk_read_deadline,
        fence: defaults.fence,
    })
}

type HttpOptionsResult = Result<http::HttpOptions, String>;

fn missing(r: &SecretKeyRef) -> String {
    format!("Secret {:?} key {:?} was not resolved", r.name, r.key)
}

/// Builds the backend client of a connection, wrapped so that its errors and remote status
/// text are scrubbed of the connection's credentials. Errors are plain text for the
/// InvalidConnection condition and never contain secret values.
pub fn build_client(
    spec: &ProviderConnectionSpec,
    secrets: &SecretValues,
    observer: Option<http::RequestObserver>,
    fence: &'static WriteFence,
) -> Result<Arc<dyn ProviderBackend>, String> {
    check_header_values(spec, secrets)?;
    let credentials: Vec<&str> = secret_refs(spec)
        .into_iter()
        .filter(|r| Some(*r) != spec.ca_bundle_secret_ref.as_ref())
        .filter_map(|r| secrets.get(r))
        .collect();
    let scrubber = Scrubber::new(credentials);
    let inner = build_unscrubbed(spec, secrets, observer, fence)?;
    Ok(Arc::new(ScrubbedBackend::new(inner, scrubber)))
}

/// Credentials sent in HTTP headers must be valid header values (no control characters, no
/// line breaks, visible ASCII): otherwise every request would fail the same way, so the
/// connection is `InvalidConnection` at once rather than retried forever.
pub fn check_header_values(
    spec: &ProviderConnectionSpec,
    secrets: &SecretValues,
) -> Result<(), String> {
    super::check_backend_headers(spec, secrets)
}

fn build_unscrubbed(
    spec: &ProviderConnectionSpec,
    secrets: &SecretValues,
    observer: Option<http::RequestObserver>,
    fence: &'static WriteFence,
) -> Result<Arc<dyn ProviderBackend>, String> {
    let options = http::HttpOptions {
        fence,
        ..http_options(spec, secrets)?
    };
    super::connect_backend(spec, secrets, &options, observer)
}

// ---------------------------------------------------------------------------------------------
// Reading the Secrets, and the client cache

/// The built clients of connections, one per version of the connection and of the Secrets it
/// read. Secrets are read by name only (the operator may neither list nor watch them): when a
/// client is built, and again by every connection check ([`ClientCache::recheck`]), which is
/// how a rotated, relabelled or deleted Secret is noticed within the connection-check interval.
pub struct ClientCache {
    /// The fence every write of the clients built here passes (see [`crate::leader`]).
    fence: &'static WriteFence,
    /// One slot per connection, each behind its own async lock, held while that connection's
    /// client is built (its Secrets read), so concurrent reconciles of one connection (and
    /// the connection check) share one client: one token bucket, one authentication token. The map's
    /// own lock is held only to find a slot: a slow Secret read of one connection never stalls
    /// the client lookups of another.
    slots: std::sync::Mutex<HashMap<ObjectRef<ProviderConnection>, Slot>>,
}

type Slot = Arc<tokio::sync::Mutex<Option<CachedBackend>>>;

struct CachedBackend {
    /// The connection's uid and generation when the client was built.
    connection: String,
    /// The resourceVersions of the Secrets it was built from.
    secrets: Vec<(String, String)>,
    backend: Arc<dyn ProviderBackend>,
}

/// What a [`ClientCache::recheck`] found.
pub enum Recheck {
    /// The Secrets and the connection are unchanged: the cached client.
    Unchanged(Arc<dyn ProviderBackend>),
    /// A client built now, because there was none yet.
    Built(Arc<dyn ProviderBackend>),
    /// A client built now in place of one built before: the connection or a Secret changed.
    Rebuilt(Arc<dyn ProviderBackend>),
}

impl Default for ClientCache {
    fn default() -> Self {
        ClientCache::new(&http::NO_ELECTION)
    }
}

impl ClientCache {
    /// An empty cache whose clients' writes pass `fence`.
    pub fn new(fence: &'static WriteFence) -> Self {
        ClientCache {
            fence,
            slots: Default::default(),
        }
    }

    /// The slot of `connection`, created empty when missing.
    fn slot(&self, connection: &ObjectRef<ProviderConnection>) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(connection.clone()).or_default().clone()
    }

    /// The slot of `connection`, if it has one.
    fn existing_slot(&self, connection: &ObjectRef<ProviderConnection>) -> Option<Slot> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.get(connection).cloned()
    }

    /// The client of `connection`: the cached one while the connection's uid and generation
    /// are unchanged, else one built from its Secrets read from the API server now. Built under
    /// the connection's lock so concurrent reconciles of one connection, and its credential
    /// check, share one client: one token bucket, one concurrency cap, one authentication token.
    pub async fn get_or_connect(
        &self,
        client: &Client,
        connection: &ProviderConnection,
        observer: Option<http::RequestObserver>,
    ) -> Result<Arc<dyn ProviderBackend>, Error> {
        let slot = self.slot(&ObjectRef::from_obj(connection));
        let mut built = slot.lock().await;
        if let Some(cached) = built.as_ref()
            && cached.connection == connection_version(connection)
        {
            return Ok(cached.backend.clone());
        }
        let (values, versions) = read_secret_values(client, connection).await?;
        let backend = build_for(connection, &values, observer, self.fence)?;
        *built = Some(cached(connection, versions, backend.clone()));
        Ok(backend)
    }

    /// Reads the connection's Secrets again (by name) and rebuilds its client when one of them
    /// or the connection changed. A Secret that can no longer be used (deleted, unlabelled, no
    /// longer readable) drops the cached client, so its credentials stop being sent.
    pub async fn recheck(
        &self,
        client: &Client,
        connection: &ProviderConnection,
        observer: Option<http::RequestObserver>,
    ) -> Result<Recheck, Error> {
        let slot = self.slot(&ObjectRef::from_obj(connection));
        let mut built = slot.lock().await;
        let (values, versions) = match read_secret_values(client, connection).await {
            Ok(read) => read,
            Err(e) => {
                if !matches!(e, Error::Kube(_)) {
                    *built = None;
                }
                return Err(e);
            }
        };
        if let Some(cached) = built.as_ref()
            && cached.connection == connection_version(connection)
            && cached.secrets == versions
        {
            return Ok(Recheck::Unchanged(cached.backend.clone()));
        }
        let replaced = built.take().is_some();
        let backend = build_for(connection, &values, observer, self.fence)?;
        *built = Some(cached(connection, versions, backend.clone()));
        Ok(if replaced {
            Recheck::Rebuilt(backend)
        } else {
            Recheck::Built(backend)
        })
    }

    /// Drops the client of a deleted connection, and the credentials in it.
    pub async fn forget(&self, connection: &ObjectRef<ProviderConnection>) {
        let removed = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.remove(connection)
        };
        if let Some(slot) = removed {
            // A build in flight finishes into the removed slot, which nothing reaches again.
            *slot.lock().await = None;
        }
    }

    /// The client last built for `connection` (same uid), whatever its Secrets' state: the
    /// remote cleanup of its providers falls back to it when a Secret is already gone.
    pub async fn last_built(
        &self,
        connection: &ProviderConnection,
    ) -> Option<Arc<dyn ProviderBackend>> {
        let uid = format!("{}/", connection.uid().unwrap_or_default());
        let slot = self.existing_slot(&ObjectRef::from_obj(connection))?;
        let built = slot.lock().await;
        let cached = built.as_ref()?;
        cached
            .connection
            .starts_with(&uid)
            .then(|| cached.backend.clone())
    }

    /// Whether a client of `connection` is cached.
    pub async fn contains(&self, connection: &ObjectRef<ProviderConnection>) -> bool {
        match self.existing_slot(connection) {
            Some(slot) => slot.lock().await.is_some(),
            None => false,
        }
    }

    /// Caches `backend` as the client of `connection` at its current version (unit tests: a
    /// fake backend).
    #[cfg(test)]
    pub(crate) async fn install(
        &self,
        connection: &ProviderConnection,
        backend: Arc<dyn ProviderBackend>,
    ) {
        let slot = self.slot(&ObjectRef::from_obj(connection));
        *slot.lock().await = Some(cached(connection, Vec::new(), backend));
    }

    /// Holds `connection`'s lock as a client build in flight does (unit tests).
    #[cfg(test)]
    async fn hold(
        &self,
        connection: &ObjectRef<ProviderConnection>,
    ) -> tokio::sync::OwnedMutexGuard<Option<CachedBackend>> {
        self.slot(connection).lock_owned().await
    }
}

fn cached(
    connection: &ProviderConnection,
    secrets: Vec<(String, String)>,
    backend: Arc<dyn ProviderBackend>,
) -> CachedBackend {
    CachedBackend {
        connection: connection_version(connection),
        secrets,
        backend,
    }
}

/// The connection's uid and generation: its client is rebuilt, and its providers reconciled
/// again, when either changes (its status, which the connection controller writes, does not
/// count).
pub fn connection_version(connection: &ProviderConnection) -> String {
    format!(
        "{}/{}",
        connection.uid().unwrap_or_default(),
        connection.metadata.generation.unwrap_or_default()
    )
}

fn build_for(
    connection: &ProviderConnection,
    values: &SecretValues,
    observer: Option<http::RequestObserver>,
    fence: &'static WriteFence,
) -> Result<Arc<dyn ProviderBackend>, Error> {
    build_client(&connection.spec, values, observer, fence).map_err(|message| {
        Error::InvalidConnection {
            name: connection.name_any(),
            message,
        }
    })
}

/// Builds a connection's backend client, reading its Secrets from the connection's namespace
/// (never from anywhere else), for the CLI, which takes part in no election (the controller's
/// are built by [`ClientCache`]).
pub async fn connect_from_api(
    client: &Client,
    connection: &ProviderConnection,
    observer: Option<http::RequestObserver>,
) -> Result<Arc<dyn ProviderBackend>, Error> {
    let (values, _versions) = read_secret_values(client, connection).await?;
    build_for(connection, &values, observer, &http::NO_ELECTION)
}

/// The values of every Secret key the connection reads (from its own namespace, through
/// [`read_credential_secret`]) and the resourceVersion of each Secret, to notice rotation.
async fn read_secret_values(
    client: &Client,
    connection: &ProviderConnection,
) -> Result<(SecretValues, Vec<(String, String)>), Error> {
    let namespace = connection.namespace().unwrap_or_default();
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut values = SecretValues::default();
    let mut versions = Vec::new();
    for r in secret_refs(&connection.spec) {
        let (value, version) = read_secret_key(&secrets_api, r).await?;
        versions.push((r.name.clone(), version));
        values.insert(r, value);
    }
    Ok((values, versions))
}

// ---------------------------------------------------------------------------------------------
// The one place Secrets are read: opt-in label, refused types, missing permission

/// Label a Secret must carry (value `"true"`) before the operator uses it as a credential.
pub const CREDENTIAL_LABEL: &str = "secprov.dev/credential";

/// Secret types never used as credentials, whatever their labels: a ServiceAccount token
/// would let whoever writes a ProviderConnection send the cluster's own identity anywhere.
const REFUSED_SECRET_TYPES: &[&str] = &["kubernetes.io/service-account-token"];

/// Whether `secret` may be used as a credential: not a refused type, and opted in with
/// [`CREDENTIAL_LABEL`]. Pure, so the rule is unit-tested on its own.
pub fn check_credential_secret(secret: &Secret) -> Result<(), Error> {
    let name = secret.name_any();
    if let Some(type_) = secret.type_.as_deref()
        && REFUSED_SECRET_TYPES.contains(&type_)
    {
        return Err(Error::SecretTypeRefused {
            name,
            type_: type_.to_owned(),
        });
    }
    if secret.labels().get(CREDENTIAL_LABEL).map(String::as_str) != Some("true") {
        return Err(Error::SecretNotOptedIn(name));
    }
    Ok(())
}

/// `namespace:name` of the operator's ServiceAccount, for the RoleBinding command in
/// `SecretAccessDenied` (from `POD_NAMESPACE` and `SERVICE_ACCOUNT_NAME`, set by the
/// Deployment through the downward API).
pub fn operator_service_account() -> String {
    let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "secprov-system".into());
    let name = std::env::var("SERVICE_ACCOUNT_NAME").unwrap_or_else(|_| "secprov-operator".into());
    format!("{namespace}:{name}")
}

/// The ClusterRole a namespace binds to let the operator read its credential Secrets, when
/// `--credential-reader-role` does not name another (the Helm chart names it after the
/// release, so two releases never share one).
pub const DEFAULT_CREDENTIAL_READER_ROLE: &str = "secprov-credential-reader";

static CREDENTIAL_READER_ROLE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets, once at start, the ClusterRole `SecretAccessDenied` tells a namespace to bind.
pub fn set_credential_reader_role(name: String) {
    let _ = CREDENTIAL_READER_ROLE.set(name);
}

/// The ClusterRole `SecretAccessDenied` tells a namespace to bind.
pub fn credential_reader_role() -> String {
    CREDENTIAL_READER_ROLE
        .get()
        .cloned()
        .unwrap_or_else(|| DEFAULT_CREDENTIAL_READER_ROLE.to_owned())
}

/// Reads Secret `name` from `api`'s namespace and applies [`check_credential_secret`]. Every
/// Secret the operator uses (connection credentials, CA bundles, provider parameters) is read
/// through here, by name, never listed or watched. A 403 (the namespace has not bound
/// [`credential_reader_role`] to the operator) is `SecretAccessDenied`.
pub async fn read_credential_secret(api: &Api<Secret>, name: &str) -> Result<Secret, Error> {
    let secret = match api.get_opt(name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Err(Error::SecretNotFound(name.to_owned())),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Err(Error::SecretAccessDenied {
                name: name.to_owned(),
                namespace: api.namespace().unwrap_or_default().to_owned(),
                role: credential_reader_role(),
                service_account: operator_service_account(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    check_credential_secret(&secret)?;
    Ok(secret)
}

/// The trimmed, non-empty UTF-8 value of one key of a credential Secret, and the Secret's
/// resourceVersion (to notice rotation).
pub async fn read_secret_key(
    api: &Api<Secret>,
    reference: &SecretKeyRef,
) -> Result<(String, String), Error> {
    let secret = read_credential_secret(api, &reference.name).await?;
    let value =
        secret_key_value(&secret, &reference.key).ok_or_else(|| Error::SecretKeyMissing {
            name: reference.name.clone(),
            key: reference.key.clone(),
        })?;
    Ok((value, secret.resource_version().unwrap_or_default()))
}

/// The trimmed, non-empty UTF-8 value of one key of a Secret.
pub(crate) fn secret_key_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::provider_connection::{CoveoConnection, JitsudoConnection};

    fn secret(labels: &[(&str, &str)], type_: Option<&str>) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some("key".into());
        s.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        s.type_ = type_.map(str::to_owned);
        s
    }

    #[test]
    fn only_secrets_labelled_as_credentials_are_used() {
        let unlabelled = check_credential_secret(&secret(&[], Some("Opaque"))).unwrap_err();
        assert_eq!(unlabelled.reason(), "SecretNotOptedIn");
        let message = unlabelled.to_string();
        assert!(
            message.contains(r#"secprov.dev/credential: "true""#)
                && message.contains("kubectl label secret key secprov.dev/credential=true"),
            "the message names the label to add: {message}"
        );
        assert!(unlabelled.is_terminal());
        let wrong_value = check_credential_secret(&secret(&[(CREDENTIAL_LABEL, "yes")], None));
        assert_eq!(wrong_value.unwrap_err().reason(), "SecretNotOptedIn");
        assert!(check_credential_secret(&secret(&[(CREDENTIAL_LABEL, "true")], None)).is_ok());
        assert!(
            check_credential_secret(&secret(&[(CREDENTIAL_LABEL, "true")], Some("Opaque"))).is_ok()
        );
    }

    #[test]
    fn service_account_tokens_are_refused_whatever_their_labels() {
        let token = secret(
            &[(CREDENTIAL_LABEL, "true")],
            Some("kubernetes.io/service-account-token"),
        );
        let e = check_credential_secret(&token).unwrap_err();
        assert_eq!(e.reason(), "SecretTypeRefused");
        assert!(
            e.to_string()
                .contains("kubernetes.io/service-account-token")
        );
        assert!(e.is_terminal());
    }

    #[test]
    fn access_denied_names_the_rolebinding_to_create() {
        let e = Error::SecretAccessDenied {
            name: "key".into(),
            namespace: "team-a".into(),
            role: DEFAULT_CREDENTIAL_READER_ROLE.into(),
            service_account: "secprov-system:secprov-operator".into(),
        };
        assert_eq!(e.reason(), "SecretAccessDenied");
        assert!(e.to_string().contains(
            "kubectl create rolebinding secprov-credential-reader -n team-a --clusterrole=secprov-credential-reader --serviceaccount=secprov-system:secprov-operator"
        ), "{e}");
        let helm = Error::SecretAccessDenied {
            name: "key".into(),
            namespace: "team-a".into(),
            role: "prod-secprov-operator-credential-reader".into(),
            service_account: "secprov-system:secprov-operator".into(),
        };
        assert!(helm.to_string().contains(
            "kubectl create rolebinding prod-secprov-operator-credential-reader -n team-a --clusterrole=prod-secprov-operator-credential-reader "
        ), "{helm}");
    }

    fn key_ref() -> SecretKeyRef {
        SecretKeyRef {
            name: "key".into(),
            key: "apiKey".into(),
        }
    }

    fn coveo_spec() -> ProviderConnectionSpec {
        ProviderConnectionSpec {
            coveo: Some(CoveoConnection {
                organization_id: "org".into(),
                endpoint: Some("http://127.0.0.1:1".into()),
                api_key_secret_ref: key_ref(),
            }),
            keystone: None,
            jitsudo: None,
            rate_limit: None,
            timeout_seconds: None,
            max_response_bytes: None,
            ca_bundle_secret_ref: None,
        }
    }

    fn values(value: &str) -> SecretValues {
        let mut v = SecretValues::default();
        v.insert(&key_ref(), value.into());
        v
    }

    #[test]
    fn a_credential_that_is_not_a_header_value_is_an_invalid_connection() {
        for bad in ["line\nbreak", "tab\tinside", "nul\0", "caf\u{e9}"] {
            let e = build_client(&coveo_spec(), &values(bad), None, &http::NO_ELECTION)
                .err()
                .expect("refused");
            assert!(e.contains("not a valid Authorization header value"), "{e}");
            assert!(!e.contains(bad), "the value is not shown: {e}");
        }
        assert!(
            build_client(
                &coveo_spec(),
                &values("xx-good key"),
                None,
                &http::NO_ELECTION
            )
            .is_ok()
        );
        let mut jitsudo = coveo_spec();
        jitsudo.coveo = None;
        jitsudo.jitsudo = Some(JitsudoConnection {
            endpoint: "http://127.0.0.1:1".into(),
            tenant_id: "2489e9ad-2ee2-4e00-8ec9-32d5f69181c0".into(),
            api_key_secret_ref: key_ref(),
        });
        let e = build_client(
            &jitsudo,
            &values("k\r\nX-Evil: 1"),
            None,
            &http::NO_ELECTION,
        )
        .err()
        .expect("refused");
        assert!(e.contains("X-API-Key"), "{e}");
    }

    #[tokio::test]
    async fn a_client_build_in_flight_stalls_only_its_own_connection() {
        let cache = ClientCache::default();
        let slow = ObjectRef::<ProviderConnection>::new("slow").within("team-a");
        let other = ObjectRef::<ProviderConnection>::new("other").within("team-b");
        let _building = cache.hold(&slow).await;
        let quick = Duration::from_millis(200);
        assert!(
            tokio::time::timeout(quick, cache.contains(&other))
                .await
                .is_ok(),
            "another connection's lookup does not wait for the build"
        );
        assert!(
            tokio::time::timeout(quick, cache.contains(&slow))
                .await
                .is_err(),
            "the connection's own lookups share its build"
        );
    }
}
