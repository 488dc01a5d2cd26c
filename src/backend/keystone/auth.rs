//! Keystone authentication: credentials, the token request body, and the token cache.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::provider_connection::KeystoneScope;

use super::*;

/// How the client authenticates. Debug never prints the secret.
#[derive(Clone)]
pub enum KeystoneCredentials {
    Password {
        user_name: String,
        user_domain_name: String,
        password: String,
    },
    ApplicationCredential {
        id: String,
        secret: String,
    },
}

impl std::fmt::Debug for KeystoneCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeystoneCredentials::Password {
                user_name,
                user_domain_name,
                ..
            } => f
                .debug_struct("Password")
                .field("user_name", user_name)
                .field("user_domain_name", user_domain_name)
                .finish_non_exhaustive(),
            KeystoneCredentials::ApplicationCredential { id, .. } => f
                .debug_struct("ApplicationCredential")
                .field("id", id)
                .finish_non_exhaustive(),
        }
    }
}

/// The `POST /v3/auth/tokens` body.
pub fn auth_request(credentials: &KeystoneCredentials, scope: Option<&KeystoneScope>) -> Value {
    let identity = match credentials {
        KeystoneCredentials::Password {
            user_name,
            user_domain_name,
            password,
        } => json!({
            "methods": ["password"],
            "password": {"user": {"name": user_name, "domain": {"name": user_domain_name}, "password": password}}
        }),
        KeystoneCredentials::ApplicationCredential { id, secret } => json!({
            "methods": ["application_credential"],
            "application_credential": {"id": id, "secret": secret}
        }),
    };
    let mut auth = json!({ "identity": identity });
    // An application credential carries its own scope; Keystone rejects an explicit one.
    let scope = match credentials {
        KeystoneCredentials::Password { .. } => scope.and_then(scope_wire),
        KeystoneCredentials::ApplicationCredential { .. } => None,
    };
    if let Some(scope) = scope {
        auth["scope"] = scope;
    }
    json!({ "auth": auth })
}

fn scope_wire(scope: &KeystoneScope) -> Option<Value> {
    if scope.system == Some(true) {
        Some(json!({"system": {"all": true}}))
    } else if let Some(project) = &scope.project_id {
        Some(json!({"project": {"id": project}}))
    } else {
        scope
            .domain_name
            .as_ref()
            .map(|d| json!({"domain": {"name": d}}))
    }
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub(super) struct TokenResponseWire {
    pub(super) token: Option<TokenBodyWire>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub(super) struct TokenBodyWire {
    pub(super) expires_at: Option<String>,
}

/// A token and when it stops being usable. Debug never prints the token.
#[derive(Clone)]
pub(super) struct CachedToken {
    pub(super) value: String,
    pub(super) expires_at: jiff::Timestamp,
}

impl CachedToken {
    pub(super) fn fresh(&self, now: jiff::Timestamp) -> bool {
        let margin = jiff::SignedDuration::try_from(TOKEN_REFRESH_MARGIN).unwrap_or_default();
        now.checked_add(margin)
            .is_ok_and(|deadline| deadline < self.expires_at)
    }
}
