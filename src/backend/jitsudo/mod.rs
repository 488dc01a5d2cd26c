//! JITSudo tenant identity providers under `/v1/identity-providers`.
//!
//! * Every call carries `X-API-Key` and `X-Tenant-ID`. A 403 `tenant_mismatch` means the
//!   tenant header does not belong to the API key: terminal, with a message naming
//!   `spec.jitsudo.tenantId` of the connection.
//! * Providers have server-assigned UUIDs and are found by their unique `name` (the
//!   SecurityProvider's `displayName`, else `providerId`, else metadata.name). The list
//!   follows `next_cursor` while `has_more`, 250 per page; the remote id recorded in status
//!   allows a direct `GET /v1/identity-providers/{id}` afterwards.
//! * Update: `PUT /v1/identity-providers/{id}` with `{name, config, enabled}` (documented).
//!
//! Assumptions (the reference documents only list and update): create is
//! `POST /v1/identity-providers` with `{name, provider_type, config, enabled}` answering the
//! provider object; `GET` and `DELETE` by id exist; a sync is triggered with
//! `POST /v1/identity-providers/{id}/sync` (a 404/405/501 there is taken to mean "no sync
//! operation", not an error).
//!
//! Health: `failed` is Degraded (reason `SyncFailed`, message = `sync_error`); `pending`, and
//! `syncing` before the first successful sync, are Progressing (the provider is not usable
//! yet); `syncing` after an earlier sync, `synced` and unknown values are Healthy.
mod client;
mod seam;
mod config;
#[cfg(test)]
mod tests;
mod wire;

pub use client::*;
pub use seam::*;
pub use config::*;
pub use wire::*;

/// The backend's name (in errors, metrics and logs), from its kind.
const BACKEND: &str = <Jitsudo as crate::backend::Backend>::KIND.as_str();
/// Error code of a credential/tenant mismatch.
pub const TENANT_MISMATCH: &str = "tenant_mismatch";
/// Largest page the list accepts.
pub const LIST_PAGE_LIMIT: u32 = 250;
/// Safety bound on pages when listing (100,000 providers); more is an error.
pub const MAX_LIST_PAGES: usize = 400;
