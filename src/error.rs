//! The one error type of the operator. Every variant has a stable CamelCase `reason()` used
//! for condition reasons, Event reasons and metric labels alike, and says whether retrying
//! without a change can help (`is_terminal`).
use std::time::Duration;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a reconcile.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// The object's spec cannot be acted on (caught before any remote call).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// The referenced ProviderConnection does not exist.
    #[error("ProviderConnection {0:?} not found in this namespace")]
    ConnectionNotFound(String),

    /// The ProviderConnection exists but cannot be used.
    #[error("ProviderConnection {name:?} is invalid: {message}")]
    InvalidConnection { name: String, message: String },

    /// The provider's backend block does not match its connection's backend.
    #[error(
        "spec.{provider} does not match ProviderConnection {connection:?}, which is a {connection_backend} connection"
    )]
    BackendMismatch {
        provider: String,
        connection: String,
        connection_backend: String,
    },

    /// A referenced Secret does not exist.
    #[error("Secret {0:?} not found in this namespace")]
    SecretNotFound(String),

    /// A referenced Secret lacks the key or its value is unusable.
    #[error("Secret {name:?} has no usable key {key:?}")]
    SecretKeyMissing { name: String, key: String },

    /// A referenced Secret exists but has not opted in as a credential.
    #[error(
        "Secret {0:?} is not labelled secprov.dev/credential: \"true\"; only Secrets carrying that label are used as credentials (kubectl label secret {0} secprov.dev/credential=true)"
    )]
    SecretNotOptedIn(String),

    /// A referenced Secret is of a type never used as a credential (service-account tokens).
    #[error("Secret {name:?} is of type {type_}, which is never used as a credential")]
    SecretTypeRefused { name: String, type_: String },

    /// The operator may not read Secrets in this namespace (no RoleBinding for it).
    #[error(
        "the operator may not read Secret {name:?} in namespace {namespace:?}; let it read this namespace's credential Secrets with: kubectl create rolebinding {role} -n {namespace} --clusterrole={role} --serviceaccount={service_account}"
    )]
    SecretAccessDenied {
        name: String,
        namespace: String,
        /// The ClusterRole to bind (the Helm chart names it after the release).
        role: String,
        /// `namespace:name` of the operator's ServiceAccount.
        service_account: String,
    },

    /// The remote system answered with an error or could not be reached.
    #[error(transparent)]
    Remote(#[from] RemoteError),

    /// A write answered 404 or 409: the provider changed remotely since it was read (deleted
    /// or replaced in the console). Observed again soon, not terminal.
    #[error("the remote provider changed since it was read; reading it again: {0}")]
    RemoteChanged(#[source] RemoteError),

    /// Deletion waits: a create of this object may still land remotely (its create-pending
    /// marker is set and the provider was not found yet).
    #[error("{0}")]
    CleanupDeferred(String),

    /// Remote writes wait for the `secprov.dev/paused` annotation to be removed.
    #[error("{0}")]
    Paused(String),

    /// Deleting the remote provider failed the same permanent way (credentials refused, the
    /// connection or its Secret gone) for a bounded number of attempts; deletion waits for a
    /// change. The message names the escape hatch.
    #[error(
        "cannot delete the remote provider {remote_id:?} ({attempts} attempts failed): {cause}. Deletion stops retrying until the connection, its Secret or this object changes. To finish deleting this object and leave the remote provider in place, set spec.deletionPolicy: Orphan (kubectl patch securityprovider {name} -n {namespace} --type merge -p '{{\"spec\":{{\"deletionPolicy\":\"Orphan\"}}}}')"
    )]
    CleanupBlocked {
        remote_id: String,
        attempts: u32,
        cause: String,
        name: String,
        namespace: String,
    },

    /// The claim on a remote provider (see `controller::claims`) kept changing hands while
    /// this object tried to take it; retried with backoff.
    #[error("{0}")]
    ClaimContested(String),

    /// A step was asked to do something its invariants forbid (a bug, not a user error).
    #[error("internal error: {0}")]
    Internal(&'static str),

    /// A Kubernetes API call failed.
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] Box<kube::Error>),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}

impl Error {
    /// Stable CamelCase reason for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::ConnectionNotFound(_) => "ConnectionNotFound",
            Error::InvalidConnection { .. } => "InvalidConnection",
            Error::BackendMismatch { .. } => "BackendMismatch",
            Error::SecretNotFound(_) => "SecretNotFound",
            Error::SecretKeyMissing { .. } => "SecretKeyMissing",
            Error::SecretNotOptedIn(_) => "SecretNotOptedIn",
            Error::SecretTypeRefused { .. } => "SecretTypeRefused",
            Error::SecretAccessDenied { .. } => "SecretAccessDenied",
            Error::Remote(e) => e.kind.reason(),
            Error::RemoteChanged(_) => "RemoteChanged",
            Error::CleanupDeferred(_) => "WaitingForPendingCreate",
            Error::Paused(_) => "ReconcilePaused",
            Error::CleanupBlocked { .. } => "CleanupBlocked",
            Error::ClaimContested(_) => "ClaimContested",
            Error::Internal(_) => "InternalError",
            Error::Kube(_) => "KubernetesApiError",
        }
    }

    /// True when retrying cannot help until the user changes something (the spec, the
    /// connection or a Secret, all of which are watched and trigger a new reconcile).
    pub fn is_terminal(&self) -> bool {
        match self {
            Error::InvalidSpec(_)
            | Error::ConnectionNotFound(_)
            | Error::InvalidConnection { .. }
            | Error::BackendMismatch { .. }
            | Error::SecretNotFound(_)
            | Error::SecretKeyMissing { .. }
            | Error::SecretNotOptedIn(_)
            | Error::SecretTypeRefused { .. }
            | Error::SecretAccessDenied { .. }
            // Removing the annotation is a watched change.
            | Error::Paused(_)
            | Error::CleanupBlocked { .. } => true,
            Error::Remote(e) => e.kind.is_terminal(),
            Error::RemoteChanged(_)
            | Error::CleanupDeferred(_)
            | Error::ClaimContested(_)
            | Error::Internal(_)
            | Error::Kube(_) => false,
        }
    }

    /// For a terminal error: whether it is still checked again now and then (every
    /// [`TERMINAL_RECHECK`]), because the remote side can change without any watched change
    /// (a key being activated, a WAF rule, a provider deleted in the console). Only a
    /// configuration the remote system refused waits for a spec change alone.
    pub fn rechecked_when_terminal(&self) -> bool {
        matches!(self, Error::Remote(e) if e.kind.is_terminal() && e.kind != RemoteErrorKind::InvalidConfiguration)
    }

    /// How long the remote system asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Remote(e) => e.retry_after,
            _ => None,
        }
    }
}

/// How long a terminal remote error other than an invalid configuration waits before it is
/// tried again (see [`Error::rechecked_when_terminal`]).
pub const TERMINAL_RECHECK: Duration = Duration::from_secs(30 * 60);

/// Classification of a remote failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteErrorKind {
    /// The remote system rejected the configuration (its configuration error code, HTTP
    /// 400/422).
    InvalidConfiguration,
    /// Credentials were refused (401).
    Unauthorized,
    /// Credentials lack a privilege, or tenant/credential mismatch (403).
    Forbidden,
    /// The object already exists or conflicts with another (409).
    Conflict,
    /// Not found where it had to exist (404 on update or refresh).
    NotFound,
    /// Other 4xx: the request is wrong and repeating it won't help.
    Rejected,
    /// 429 or a throttling error code.
    RateLimited,
    /// 5xx or a connection failure.
    Unavailable,
    /// No response within the timeout.
    Timeout,
    /// A 2xx response whose body could not be understood.
    BadResponse,
    /// A part the provider needs (such as a mapping) exists under the declared id and was not
    /// created by this object; taken over only with `spec.adopt: true`.
    AlreadyExists,
}

impl RemoteErrorKind {
    /// Stable CamelCase reason.
    pub fn reason(self) -> &'static str {
        match self {
            RemoteErrorKind::InvalidConfiguration => "RemoteInvalidConfiguration",
            RemoteErrorKind::Unauthorized => "RemoteUnauthorized",
            RemoteErrorKind::Forbidden => "RemoteForbidden",
            RemoteErrorKind::Conflict => "RemoteConflict",
            RemoteErrorKind::NotFound => "RemoteNotFound",
            RemoteErrorKind::Rejected => "RemoteRejected",
            RemoteErrorKind::RateLimited => "RemoteRateLimited",
            RemoteErrorKind::Unavailable => "RemoteUnavailable",
            RemoteErrorKind::Timeout => "RemoteTimeout",
            RemoteErrorKind::BadResponse => "RemoteBadResponse",
            RemoteErrorKind::AlreadyExists => "AlreadyExists",
        }
    }

    /// 4xx (other than 429) mean the request itself is wrong: do not retry until something
    /// changes. Everything else is worth retrying with backoff.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RemoteErrorKind::InvalidConfiguration
                | RemoteErrorKind::Unauthorized
                | RemoteErrorKind::Forbidden
                | RemoteErrorKind::Conflict
                | RemoteErrorKind::AlreadyExists
                | RemoteErrorKind::NotFound
                | RemoteErrorKind::Rejected
        )
    }

    /// Classification of an HTTP status without a more specific error code.
    pub fn from_status(status: u16) -> Self {
        match status {
            400 | 422 => RemoteErrorKind::Rejected,
            401 => RemoteErrorKind::Unauthorized,
            403 => RemoteErrorKind::Forbidden,
            404 => RemoteErrorKind::NotFound,
            409 => RemoteErrorKind::Conflict,
            408 => RemoteErrorKind::Timeout,
            429 => RemoteErrorKind::RateLimited,
            500..=599 => RemoteErrorKind::Unavailable,
            _ => RemoteErrorKind::Rejected,
        }
    }
}

/// A failed remote call, with what the remote system said. Never carries credentials: it is
/// built from status, error code and the remote message only. The request id is kept for logs
/// but left out of the message, so a repeated failure yields an identical condition message
/// (and no status write).
#[derive(thiserror::Error, Debug, Clone)]
#[error("{backend} {operation} failed{}: {message}", self.detail_suffix())]
pub struct RemoteError {
    /// Backend name ([`crate::api::provider_connection::BackendKind::as_str`]).
    pub backend: &'static str,
    /// Operation name (`get`, `create`, `update`, `delete`, `refresh`, `list`, `authenticate`).
    pub operation: &'static str,
    /// What kind of failure it is.
    pub kind: RemoteErrorKind,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// Remote error code, e.g. `SECURITY_PROVIDER_INVALID_CONFIGURATION`.
    pub code: Option<String>,
    /// Remote message or a description of the transport failure.
    pub message: String,
    /// Remote request id, for support tickets.
    pub request_id: Option<String>,
    /// `Retry-After` from the response.
    pub retry_after: Option<Duration>,
}

impl RemoteError {
    /// A remote error without an HTTP response.
    pub fn transport(
        backend: &'static str,
        operation: &'static str,
        kind: RemoteErrorKind,
        message: impl Into<String>,
    ) -> Self {
        RemoteError {
            backend,
            operation,
            kind,
            status: None,
            code: None,
            message: message.into(),
            request_id: None,
            retry_after: None,
        }
    }

    fn detail_suffix(&self) -> String {
        let mut parts = Vec::new();
        if let Some(status) = self.status {
            parts.push(format!("HTTP {status}"));
        }
        if let Some(code) = &self.code {
            parts.push(code.clone());
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_error_message_names_status_code_and_request() {
        let e = RemoteError {
            backend: "coveo",
            operation: "create",
            kind: RemoteErrorKind::InvalidConfiguration,
            status: Some(400),
            code: Some("SECURITY_PROVIDER_INVALID_CONFIGURATION".into()),
            message: "id too long".into(),
            request_id: Some("r-1".into()),
            retry_after: None,
        };
        assert_eq!(
            e.to_string(),
            "coveo create failed (HTTP 400, SECURITY_PROVIDER_INVALID_CONFIGURATION): id too long"
        );
        let err = Error::from(e);
        assert_eq!(err.reason(), "RemoteInvalidConfiguration");
        assert!(err.is_terminal());
    }

    #[test]
    fn rate_limits_and_outages_are_retried_client_errors_are_not() {
        assert!(!RemoteErrorKind::from_status(429).is_terminal());
        assert!(!RemoteErrorKind::from_status(503).is_terminal());
        assert!(RemoteErrorKind::from_status(400).is_terminal());
        assert!(RemoteErrorKind::from_status(403).is_terminal());
        assert_eq!(RemoteErrorKind::from_status(409), RemoteErrorKind::Conflict);
    }
}
