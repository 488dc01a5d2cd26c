//! Coveo-style error responses.
//!
//! Body shape `{"errorCode","message","requestId"}` plus an `X-Request-ID` header carrying the
//! same id: what the official platform-client parses (reference §1.8). Only
//! `SECURITY_PROVIDER_INVALID_CONFIGURATION` is documented for this API (seed 002);
//! `UNAUTHORIZED`, `INVALID_TOKEN`, `ACCESS_DENIED` and `INVALID_JSON` are the codes the Push API
//! documents for the same situations. Every other code here is our assumption.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::new_request_id;

pub(super) const INVALID_CONFIGURATION: &str = "SECURITY_PROVIDER_INVALID_CONFIGURATION";
pub(super) const INVALID_JSON: &str = "INVALID_JSON";
/// Assumption: bad query parameter or path/body id mismatch.
pub(super) const INVALID_PARAMETER: &str = "INVALID_PARAMETER";
pub(super) const UNAUTHORIZED: &str = "UNAUTHORIZED";
pub(super) const INVALID_TOKEN: &str = "INVALID_TOKEN";
pub(super) const ACCESS_DENIED: &str = "ACCESS_DENIED";
/// Assumption: the real code for an unknown provider is undocumented.
pub(super) const NOT_FOUND: &str = "SECURITY_PROVIDER_NOT_FOUND";
/// Assumption: the real code for an unknown schedule is undocumented.
pub(super) const SCHEDULE_NOT_FOUND: &str = "SCHEDULE_NOT_FOUND";
/// Assumption: an unknown route under `/rest`.
pub(super) const ROUTE_NOT_FOUND: &str = "NOT_FOUND";
/// Assumption: the real code for a create of an existing id is undocumented.
pub(super) const ALREADY_EXISTS: &str = "SECURITY_PROVIDER_ALREADY_EXISTS";
pub(super) const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
pub(super) const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
pub(super) const INTERNAL_ERROR: &str = "INTERNAL_ERROR";

/// An API error; turns into the JSON error response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    error_code: &'a str,
    message: &'a str,
    request_id: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid_configuration(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID_CONFIGURATION, message)
    }

    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID_JSON, message)
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID_PARAMETER, message)
    }

    pub fn provider_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            NOT_FOUND,
            format!("The security provider '{id}' does not exist."),
        )
    }

    pub fn schedule_not_found(id: &str, schedule_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            SCHEDULE_NOT_FOUND,
            format!("The security provider '{id}' has no schedule '{schedule_id}'."),
        )
    }

    pub fn already_exists(id: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            ALREADY_EXISTS,
            format!("A security provider with id '{id}' already exists."),
        )
    }

    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ACCESS_DENIED, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = new_request_id();
        let body = ErrorBody {
            error_code: self.code,
            message: &self.message,
            request_id: &request_id,
        };
        // Serializing three strings cannot fail; fall back to an empty object regardless.
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            headers.insert("x-request-id", value);
        }
        response
    }
}
