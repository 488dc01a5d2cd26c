//! `ProviderConnection`: where a remote system is and which credentials reach it.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{PATH_SEGMENT_RULE, SecretKeyRef};

/// CEL rule shared by every endpoint field: https, or http only to a loopback host.
/// A JITSudo tenant id is a UUID (it also goes into the `X-Tenant-ID` header as is).
const TENANT_ID_RULE: &str =
    "self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')";
const TENANT_ID_MESSAGE: &str =
    "tenantId must be a UUID, e.g. 2489e9ad-2ee2-4e00-8ec9-32d5f69181c0";
const ENDPOINT_RULE: &str = "self.startsWith('https://') || self.matches('^http://(127\\\\.[0-9]+\\\\.[0-9]+\\\\.[0-9]+|localhost|\\\\[::1\\\\])(:[0-9]+)?(/.*)?$')";
const ENDPOINT_MESSAGE: &str = "endpoint must be an https:// URL (http:// is accepted only for loopback hosts such as 127.0.0.1 or localhost)";

/// Connection to one remote system: exactly one of `coveo`, `keystone` or `jitsudo`.
/// Credentials come from Secrets in the same namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "secprov.dev",
    version = "v1alpha1",
    kind = "ProviderConnection",
    plural = "providerconnections",
    shortname = "provconn",
    category = "secprov",
    namespaced,
    status = "ProviderConnectionStatus",
    doc = "Connection settings and credentials for one remote system that SecurityProviders are reconciled against.",
    printcolumn(name = "Backend", type_ = "string", json_path = ".status.backend"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("[has(self.coveo), has(self.keystone), has(self.jitsudo)].filter(b, b).size() == 1").message("exactly one of spec.coveo, spec.keystone or spec.jitsudo must be set"))]
#[serde(rename_all = "camelCase")]
pub struct ProviderConnectionSpec {
    /// Coveo Platform organization and API key (Security Cache API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coveo: Option<CoveoConnection>,

    /// OpenStack Keystone (identity v3) endpoint and credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keystone: Option<KeystoneConnection>,

    /// JITSudo API endpoint, tenant and API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitsudo: Option<JitsudoConnection>,

    /// Client-side limits for calls to this remote system, shared by every SecurityProvider
    /// that uses this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,

    /// Timeout of every remote request, in seconds. Defaults to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: Option<u32>,

    /// Largest response body accepted from the remote system, in bytes; a larger one is
    /// `RemoteBadResponse`. Defaults to 4 MiB (4194304).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 65536, max = 67108864))]
    pub max_response_bytes: Option<u32>,

    /// Extra PEM CA certificates trusted for this endpoint (for private endpoints), from a
    /// Secret key in the same namespace. TLS verification is always on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeyRef>,
}

/// Coveo Platform connection.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CoveoConnection {
    /// Coveo organization id (as in `/rest/organizations/{organizationId}`). Not `.` or `..`,
    /// and without `/` or control characters.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new(PATH_SEGMENT_RULE).message("coveo.organizationId must not be '.' or '..' or contain '/' or control characters: it is one segment of the remote URL"))]
    pub organization_id: String,

    /// Platform API base URL. Defaults to `https://platform.cloud.coveo.com` (US). Other
    /// regions: `https://platform-eu.cloud.coveo.com` (EU), `https://platform-au.cloud.coveo.com`
    /// (AU), `https://platform-ca.cloud.coveo.com` (CA); HIPAA:
    /// `https://platformhipaa.cloud.coveo.com`. `http://` is accepted only for loopback hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(ENDPOINT_RULE).message(ENDPOINT_MESSAGE))]
    pub endpoint: Option<String>,

    /// Secret key holding the API key (privileges: Security identity providers View and Edit).
    pub api_key_secret_ref: SecretKeyRef,
}

/// Default Coveo Platform API host.
pub const COVEO_DEFAULT_ENDPOINT: &str = "https://platform.cloud.coveo.com";

impl CoveoConnection {
    /// The configured endpoint or the US default.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_deref().unwrap_or(COVEO_DEFAULT_ENDPOINT)
    }
}

/// OpenStack Keystone connection (identity API v3).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("[has(self.password), has(self.applicationCredential)].filter(b, b).size() == 1").message("keystone needs exactly one of password or applicationCredential"))]
#[serde(rename_all = "camelCase")]
pub struct KeystoneConnection {
    /// Identity endpoint, e.g. `https://iam.eu-de.otc.t-systems.com/v3` (a trailing `/v3` is
    /// optional). `http://` is accepted only for loopback hosts.
    #[x_kube(validation = Rule::new(ENDPOINT_RULE).message(ENDPOINT_MESSAGE))]
    pub auth_url: String,

    /// Password authentication of a user with admin rights on identity providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<KeystonePassword>,

    /// Application credential authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_credential: Option<KeystoneApplicationCredential>,

    /// Scope of the token. Public clouds such as Open Telekom Cloud require a domain scope for
    /// IAM APIs; upstream Keystone prefers a system scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<KeystoneScope>,
}

/// Keystone password authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeystonePassword {
    /// User name.
    #[schemars(length(min = 1))]
    pub user_name: String,
    /// Domain of the user (name). Defaults to `Default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_domain_name: Option<String>,
    /// Secret key holding the password.
    pub password_secret_ref: SecretKeyRef,
}

/// Keystone application credential authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeystoneApplicationCredential {
    /// Application credential id.
    #[schemars(length(min = 1))]
    pub id: String,
    /// Secret key holding the application credential secret.
    pub secret_secret_ref: SecretKeyRef,
}

/// Token scope for Keystone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeystoneScope {
    /// Scope to a domain by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<String>,
    /// Scope to a project by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Scope to the whole system (`system: {all: true}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<bool>,
}

/// JITSudo connection.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JitsudoConnection {
    /// API base URL, e.g. `https://api.jitsudo.io`. `http://` is accepted only for loopback hosts.
    #[x_kube(validation = Rule::new(ENDPOINT_RULE).message(ENDPOINT_MESSAGE))]
    pub endpoint: String,

    /// Tenant id (a UUID, e.g. `2489e9ad-2ee2-4e00-8ec9-32d5f69181c0`) sent as `X-Tenant-ID`;
    /// it must be the tenant of the API key.
    #[schemars(length(min = 36, max = 36))]
    #[x_kube(validation = Rule::new(TENANT_ID_RULE).message(TENANT_ID_MESSAGE))]
    pub tenant_id: String,

    /// Secret key holding the API key sent as `X-API-Key`.
    pub api_key_secret_ref: SecretKeyRef,
}

/// Client-side limits for calls to one remote system.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained requests per second. Defaults to 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub requests_per_second: Option<u32>,
    /// Requests allowed in a burst above the sustained rate. Defaults to 40.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub burst: Option<u32>,
    /// Requests in flight at once. Defaults to 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_concurrency: Option<u32>,
}

/// Observed state of a connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConnectionStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: credentials resolved and the remote system accepted them. While not, also
    /// `Stalled` (only a change can fix it) or `Reconciling` (being retried), for kstatus.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `coveo`, `keystone` or `jitsudo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// Which remote system a connection or provider targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendKind {
    Coveo,
    Keystone,
    Jitsudo,
}

impl BackendKind {
    /// Every backend (metrics create their per-backend series up front).
    pub const ALL: [BackendKind; 3] = [
        BackendKind::Coveo,
        BackendKind::Keystone,
        BackendKind::Jitsudo,
    ];

    /// Lower-case name used in status, metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            BackendKind::Coveo => "coveo",
            BackendKind::Keystone => "keystone",
            BackendKind::Jitsudo => "jitsudo",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ProviderConnectionSpec {
    /// The single backend configured, or None when zero or several blocks are set.
    pub fn backend(&self) -> Option<BackendKind> {
        match (&self.coveo, &self.keystone, &self.jitsudo) {
            (Some(_), None, None) => Some(BackendKind::Coveo),
            (None, Some(_), None) => Some(BackendKind::Keystone),
            (None, None, Some(_)) => Some(BackendKind::Jitsudo),
            _ => None,
        }
    }
}

impl super::SecurityProviderSpec {
    /// The single backend block set, or None when zero or several are set.
    pub fn backend(&self) -> Option<BackendKind> {
        match (&self.coveo, &self.keystone, &self.jitsudo) {
            (Some(_), None, None) => Some(BackendKind::Coveo),
            (None, Some(_), None) => Some(BackendKind::Keystone),
            (None, None, Some(_)) => Some(BackendKind::Jitsudo),
            _ => None,
        }
    }
}

impl ProviderConnection {
    /// The identity of the remote system this connection reaches, as recorded next to an owned
    /// provider's `status.remoteId`. None when the connection has no single backend.
    pub fn ownership(&self) -> Option<super::security_provider::Ownership> {
        let (endpoint, scope) = match (&self.spec.coveo, &self.spec.keystone, &self.spec.jitsudo) {
            (Some(c), None, None) => (c.endpoint(), c.organization_id.as_str()),
            (None, Some(k), None) => (k.auth_url.as_str(), ""),
            (None, None, Some(j)) => (j.endpoint.as_str(), j.tenant_id.as_str()),
            _ => return None,
        };
        let recorded = super::security_provider::Ownership {
            connection_uid: self.metadata.uid.clone().unwrap_or_default(),
            endpoint: endpoint.to_owned(),
            scope: scope.to_owned(),
        };
        Some(recorded.canonical())
    }
}
