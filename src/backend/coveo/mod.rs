//! Coveo Security Cache API: security identity providers under
//! `/rest/organizations/{org}/securityproviders`.
//!
//! Wire types are lenient on purpose: unknown fields are ignored, enums are kept as strings
//! (the sources disagree on `currentStatus.type`), and `lastRefreshOperation.timestamp` is
//! accepted as epoch milliseconds or as a date-time string.
mod client;
mod seam;
mod config;
pub mod schedules;
pub mod secrets;
#[cfg(test)]
mod tests;
mod wire;

pub use client::*;
pub use seam::*;
pub use config::*;
pub use wire::*;

/// The backend's name (in errors, metrics and logs), from its kind.
const BACKEND: &str = <Coveo as crate::backend::Backend>::KIND.as_str();
/// Error code Coveo returns for the four configuration problems of its docs.
pub const INVALID_CONFIGURATION: &str = "SECURITY_PROVIDER_INVALID_CONFIGURATION";
/// Id of the built-in provider present in every organization.
pub const EMAIL_SECURITY_PROVIDER: &str = "Email Security Provider";
/// Page size for listing; Coveo's default and a safe maximum.
pub const LIST_PAGE_SIZE: usize = 100;
/// Pages fetched at once by [`CoveoClient::list_each_concurrently`] (the connection's rate limit
/// and concurrency cap still apply).
pub const LIST_CONCURRENCY: usize = 8;
/// Safety bound on pages when listing (100,000 providers); a remote announcing or serving more
/// is an error.
pub const MAX_LIST_PAGES: usize = 1000;
