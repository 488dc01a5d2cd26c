//! From a ProviderConnection to a built client: which Secret keys it reads, reading them from
//! the connection's namespace, the HTTP settings, building the client, and the cache that
//! gives every reconcile of one connection version the same client.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use super::{Backend, ProviderBackend, coveo, http, jitsudo, keystone};
use crate::api::provider_connection::ProviderConnectionSpec;
use crate::api::{ProviderConnection, SecretKeyRef};
use crate::error::Error;

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

/// Every Secret key a connection reads.
pub fn secret_refs(spec: &ProviderConnectionSpec) -> Vec<&SecretKeyRef> {
    let mut refs = Vec::new();
    if let Some(coveo) = &spec.coveo {
        refs.push(&coveo.api_key_secret_ref);
    }
    if let Some(keystone) = &spec.keystone {
        if let Some(password) = &keystone.password {
            refs.push(&password.password_secret_ref);
        }
        if let Some(credential) = &keystone.application_credential {
            refs.push(&credential.secret_secret_ref);
        }
    }
    if let Some(jitsudo) = &spec.jitsudo {
        refs.push(&jitsudo.api_key_secret_ref);
    }
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
    })
}

type HttpOptionsResult = Result<http::HttpOptions, String>;

fn missing(r: &SecretKeyRef) -> String {
    format!("Secret {:?} key {:?} was not resolved", r.name, r.key)
}

/// Builds the backend client of a connection. Errors are plain text for the InvalidConnection
/// condition and never contain secret values.
pub fn build_client(
    spec: &ProviderConnectionSpec,
    secrets: &SecretValues,
    observer: Option<http::RequestObserver>,
) -> Result<Arc<dyn ProviderBackend>, String> {
    let options = http_options(spec, secrets)?;
    let backend = if let Some(block) = &spec.coveo {
        Backend::Coveo(coveo::CoveoClient::connect(block, secrets, &options)?)
    } else if let Some(block) = &spec.keystone {
        Backend::Keystone(keystone::KeystoneClient::connect(block, secrets, &options)?)
    } else if let Some(block) = &spec.jitsudo {
        Backend::Jitsudo(jitsudo::JitsudoClient::connect(block, secrets, &options)?)
    } else {
        return Err("the connection has no backend block".into());
    };
    Ok(Arc::new(match observer {
        Some(o) => with_observer(backend, o),
        None => backend,
    }))
}

fn with_observer(backend: Backend, observer: http::RequestObserver) -> Backend {
    match backend {
        Backend::Coveo(c) => Backend::Coveo(c.with_observer(observer)),
        Backend::Keystone(c) => Backend::Keystone(c.with_observer(observer)),
        Backend::Jitsudo(c) => Backend::Jitsudo(c.with_observer(observer)),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the Secrets, and the client cache

/// The built clients of connections, one per version of the connection and of the Secrets it
/// reads (so a rotated key is picked up at the next reconcile).
#[derive(Default)]
pub struct ClientCache {
    /// Async lock held while a client is built, so concurrent reconciles of one connection
    /// (and the connection check) share one client: one token bucket, one Keystone token.
    built: tokio::sync::Mutex<HashMap<ObjectRef<ProviderConnection>, CachedBackend>>,
}

struct CachedBackend {
    fingerprint: String,
    backend: Arc<dyn ProviderBackend>,
}

impl ClientCache {
    /// The client of `connection`: the cached one while the connection's uid and generation
    /// and the resourceVersions of its Secrets (from the `secrets` metadata cache) are
    /// unchanged, else a new one built from Secrets read from the API server. Built under an
    /// async lock so concurrent reconciles of one connection, and its credential check, share
    /// one client: one token bucket, one concurrency cap, one Keystone token.
    pub async fn get_or_connect(
        &self,
        client: &Client,
        secrets: &Store<PartialObjectMeta<Secret>>,
        connection: &ProviderConnection,
        observer: Option<http::RequestObserver>,
    ) -> Result<Arc<dyn ProviderBackend>, Error> {
        let namespace = connection.namespace().unwrap_or_default();
        let versions: Option<Vec<(String, String)>> = secret_refs(&connection.spec)
            .iter()
            .map(|r| {
                let meta = secrets.get(&ObjectRef::new(&r.name).within(&namespace))?;
                Some((r.name.clone(), meta.resource_version().unwrap_or_default()))
            })
            .collect();
        let key = ObjectRef::from_obj(connection);
        let mut built = self.built.lock().await;
        if let Some(versions) = &versions
            && let Some(cached) = built.get(&key)
            && cached.fingerprint == fingerprint(connection, versions)
        {
            return Ok(cached.backend.clone());
        }
        // A Secret missing from the cache was created a moment ago (its watch event is still
        // on the way) or really is missing: the API server tells which.
        let (backend, read_versions) =
            connect_reading_secrets(client, connection, observer).await?;
        let fingerprint = fingerprint(connection, &read_versions);
        built.insert(
            key,
            CachedBackend {
                fingerprint,
                backend: backend.clone(),
            },
        );
        Ok(backend)
    }
}

/// Identity of a built client: the connection's uid and generation and the versions of the
/// Secrets it read.
fn fingerprint(connection: &ProviderConnection, secret_versions: &[(String, String)]) -> String {
    let mut fingerprint = format!(
        "{}/{}",
        connection.uid().unwrap_or_default(),
        connection.metadata.generation.unwrap_or_default()
    );
    for (name, version) in secret_versions {
        fingerprint.push_str(&format!("/{name}={version}"));
    }
    fingerprint
}

/// Builds a connection's backend client, reading its Secrets from the connection's namespace
/// (never from anywhere else). Used by the controller (behind [`ClientCache`]) and by the CLI.
pub async fn connect_from_api(
    client: &Client,
    connection: &ProviderConnection,
    observer: Option<http::RequestObserver>,
) -> Result<Arc<dyn ProviderBackend>, Error> {
    Ok(connect_reading_secrets(client, connection, observer)
        .await?
        .0)
}

/// Like [`connect_from_api`], also returning the resourceVersion of each Secret read.
async fn connect_reading_secrets(
    client: &Client,
    connection: &ProviderConnection,
    observer: Option<http::RequestObserver>,
) -> Result<(Arc<dyn ProviderBackend>, Vec<(String, String)>), Error> {
    let namespace = connection.namespace().unwrap_or_default();
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut values = SecretValues::default();
    let mut versions = Vec::new();
    for r in secret_refs(&connection.spec) {
        let secret = secrets_api
            .get_opt(&r.name)
            .await?
            .ok_or_else(|| Error::SecretNotFound(r.name.clone()))?;
        versions.push((
            r.name.clone(),
            secret.resource_version().unwrap_or_default(),
        ));
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&r.key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::SecretKeyMissing {
                name: r.name.clone(),
                key: r.key.clone(),
            })?;
        values.insert(r, value);
    }
    let backend = build_client(&connection.spec, &values, observer).map_err(|message| {
        Error::InvalidConnection {
            name: connection.name_any(),
            message,
        }
    })?;
    Ok((backend, versions))
}
