//! Bodies of the fuzz targets in `fuzz/` (one per remote response parser). They live here, out
//! of the operator's library; `tests/fuzz_bodies.rs` includes this file so that the ordinary
//! test suite compiles them and runs them on a few nasty inputs too.
//! Each must return normally on any input: a remote system, or anything between it and us,
//! controls these bytes.
#![doc(hidden)]

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use secprov::backend::coveo::{
    self, CoveoConfig, PageWire, ProviderWire, TimestampWire, health_of, observed_from_wire,
};
use secprov::backend::http;
use secprov::backend::{jitsudo, keystone};

/// A provider body (`GET`/`POST`/`PUT /securityproviders...`), normalized and compared.
pub fn coveo_provider(data: &[u8]) {
    if let Ok(wire) = serde_json::from_slice::<ProviderWire>(data) {
        let observed = observed_from_wire(wire);
        let desired = secprov::backend::ProviderConfig::Coveo(CoveoConfig::desired(
            "fuzz",
            "fuzz",
            &Default::default(),
        ));
        let _ = desired.diff(&observed.config);
        let _ = health_of(observed.state.current_status.as_ref());
        let _ = coveo::is_refreshing(observed.state.current_status.as_ref());
    }
}

/// A page body (`/securityproviders/page`, `/batch/filter`).
pub fn coveo_page(data: &[u8]) {
    if let Ok(page) = serde_json::from_slice::<PageWire>(data) {
        for item in page.items {
            let _ = observed_from_wire(item);
        }
    }
}

/// A timestamp, as JSON (number or string) and as bare text.
pub fn coveo_timestamp(data: &[u8]) {
    if let Ok(ts) = serde_json::from_slice::<TimestampWire>(data) {
        let _ = ts.to_rfc3339();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = TimestampWire::Text(text.to_owned()).to_rfc3339();
    }
}

/// Splits fuzz input into a status (first two bytes), a header line (the value of every
/// header a parser reads) and a body.
fn error_response(data: &[u8]) -> (u16, HeaderMap, &[u8]) {
    let (status, rest) = match data {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => (500, data),
    };
    let (line, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..0], rest),
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(line) {
        for name in [
            "retry-after",
            "x-request-id",
            "x-coveo-waf-action",
            "www-authenticate",
        ] {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
    (status, headers, body)
}

fn use_error(error: secprov::error::RemoteError) {
    let _ = error.to_string();
    let _ = secprov::Error::from(error).is_terminal();
}

/// A Coveo error response.
pub fn coveo_error(data: &[u8]) {
    let (status, headers, body) = error_response(data);
    use_error(coveo::parse_error("get", status, &headers, body));
}

/// A Keystone identity provider body (`{"identity_provider": {...}}` or the bare object).
pub fn keystone_identity_provider(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let inner = value.get("identity_provider").cloned().unwrap_or(value);
    if let Ok(wire) = serde_json::from_value::<keystone::IdentityProviderWire>(inner) {
        let observed = keystone::observed_from_wire(wire);
        let desired = secprov::backend::ProviderConfig::Keystone(
            keystone::KeystoneConfig::desired("fuzz", &Default::default()),
        );
        let _ = desired.diff(&observed.config);
    }
}

/// A Keystone error response (both error shapes).
pub fn keystone_error(data: &[u8]) {
    let (status, headers, body) = error_response(data);
    use_error(keystone::parse_error("get", status, &headers, body));
}

/// A JITSudo provider body.
pub fn jitsudo_provider(data: &[u8]) {
    if let Ok(wire) = serde_json::from_slice::<jitsudo::ProviderWire>(data) {
        let observed = jitsudo::observed_from_wire(wire);
        let desired = secprov::backend::ProviderConfig::Jitsudo(jitsudo::JitsudoConfig::desired(
            "fuzz",
            &Default::default(),
        ));
        let _ = desired.diff(&observed.config);
    }
}

/// A JITSudo list page (`data`, `next_cursor`, `has_more`).
pub fn jitsudo_page(data: &[u8]) {
    if let Ok(page) = serde_json::from_slice::<jitsudo::PageWire>(data) {
        for item in page.data {
            let _ = jitsudo::observed_from_wire(item);
        }
    }
}

/// A JITSudo error response.
pub fn jitsudo_error(data: &[u8]) {
    let (status, headers, body) = error_response(data);
    use_error(jitsudo::parse_error("get", status, &headers, body));
}

/// A `Retry-After` header value.
pub fn retry_after(data: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, value);
        let _ = http::retry_after(&headers, jiff::Timestamp::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NASTY: &[&[u8]] = &[
        b"",
        b"{",
        b"null",
        b"[]",
        b"\xff\xfe",
        br#"{"id":"x","statistics":{"numberOfEntitiesByState":{"A":9223372036854775807,"B":9223372036854775807}}}"#,
        br#"{"id":"x","statistics":{"numberOfEntitiesByState":{"A":-9223372036854775808,"B":-1}}}"#,
        br#"{"id":"x","lastRefreshOperation":{"timestamp":1e308}}"#,
        br#"{"id":"x","lastRefreshOperation":{"timestamp":-9223372036854775808}}"#,
        br#"{"id":"x","lastRefreshOperation":{"timestamp":"99999-99-99T99:99:99"}}"#,
        br#"{"id":"x","cascadingSecurityProviders":{"a":{}},"referencedBy":[{}],"parameters":{"p":{"sensitive":true}}}"#,
        br#"{"items":[{"id":"a"},{}],"totalPages":18446744073709551615}"#,
        b"\x01\xf4Fri, 31 Dec 9999 23:59:59 GMT\n{\"errorCode\":\"X\",\"message\":\"\"}",
        b"\xff\xff18446744073709551615\n<html>",
        b"\x00\x00\n",
        b"1e308",
        b"\"2026-11-23T10:00:00+99:00\"",
        br#"{"identity_provider":{"id":"x","remote_ids":null,"authorization_ttl":-1,"links":{"self":7}}}"#,
        br#"{"error":{"code":"x","title":null,"message":[1]},"error_code":"IAM.0012"}"#,
        br#"{"data":[{"id":"x","name":"n","provider_type":"future","config":[],"sync_status":"???","last_synced_at":"not a date"}],"has_more":true,"next_cursor":null}"#,
        br#"{"code":"tenant_mismatch","message":"m","details":{"a":1},"notices":[null]}"#,
    ];

    #[test]
    fn parsers_survive_nasty_inputs() {
        for input in NASTY {
            coveo_provider(input);
            coveo_page(input);
            coveo_timestamp(input);
            coveo_error(input);
            retry_after(input);
            keystone_identity_provider(input);
            keystone_error(input);
            jitsudo_provider(input);
            jitsudo_page(input);
            jitsudo_error(input);
        }
    }
}
