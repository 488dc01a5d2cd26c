//! OpenStack Keystone OS-FEDERATION identity providers (identity API v3), including Open
//! Telekom Cloud IAM, which serves the same paths.
//!
//! * Authentication: `POST /v3/auth/tokens` with a password or an application credential; the
//!   token (header `X-Subject-Token`) is cached until 60 s before its `expires_at` and sent as
//!   `X-Auth-Token`. A 401 on an API call drops the token, re-authenticates once and repeats
//!   the call once.
//! * Create `PUT /v3/OS-FEDERATION/identity_providers/{id}` (201), read with `GET`, update with
//!   `PATCH` carrying only the changed fields (`domain_id` is create-only), `DELETE` (204).
//! * Errors come in the upstream shape `{"error":{"code","title","message"}}` or the OTC shape
//!   `{"error_code":"IAM.0xxx","error_msg"}`; both are parsed. `IAM.0012` and 429 are rate
//!   limiting; 409 (duplicate id or remote id) is terminal.
//!
//! Keystone has no refresh operation: [`ProviderBackend::refresh`] returns false.
mod auth;
mod client;
mod seam;
mod config;
pub mod federation;
mod sync;
#[cfg(test)]
mod tests;
mod wire;

pub use auth::*;
pub use client::*;
pub use seam::*;
pub use config::*;
pub use wire::*;

use std::time::Duration;

/// The backend's name (in errors, metrics and logs), from its kind.
const BACKEND: &str = <Keystone as crate::backend::Backend>::KIND.as_str();
/// OTC IAM's throttling error code ("throttling threshold has been reached").
pub const IAM_THROTTLED: &str = "IAM.0012";
/// A cached token is replaced this long before it expires, so no call races its expiry.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Lifetime assumed for a token whose `expires_at` is missing or unreadable.
const ASSUMED_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// Health reason after a create whose protocols or mappings are not written yet (the next
/// reconcile writes them, or reports why it cannot).
pub const REASON_FEDERATION_PENDING: &str = "FederationPending";
/// Safety bound on `links.next` pages when listing; more is an error.
pub const MAX_LIST_PAGES: usize = 100;
