//! examples/ and the demo's names in them. The simulator endpoints are written only in the
//! example connections (examples/<backend>/00-connection.yaml); everything that applies an
//! example (the demo, the tests) replaces them with the address of the simulator it started.
use crate::cluster::repo;

/// The backends with a folder under examples/, in the order the demo starts them.
pub const EXAMPLE_BACKENDS: [&str; 3] = ["coveo", "keystone", "jitsudo"];
/// The Coveo organization and API key of the example connection.
pub const COVEO_ORG: &str = "demo-org";
pub const DEMO_COVEO_API_KEY: &str = "demo-api-key";
/// The Keystone password in the example connection's Secret (its user is the simulator's
/// default, `admin`).
pub const DEMO_KEYSTONE_PASSWORD: &str = "demo-password";
/// The JITSudo API key in the example connection's Secret (its tenant is the simulator's
/// default tenant).
pub const DEMO_JITSUDO_API_KEY: &str = "demo-jitsudo-key";

/// The text of `examples/<path>`.
pub fn example_text(path: &str) -> String {
    let file = repo().join("examples").join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
}

/// The endpoint (scheme, host and port, without a path such as Keystone's `/v3`) that the
/// example connection of `backend` names.
pub fn demo_endpoint(backend: &str) -> String {
    let text = example_text(&format!("{backend}/00-connection.yaml"));
    let url = text
        .lines()
        .map(str::trim)
        .find_map(|l| {
            l.strip_prefix("endpoint:")
                .or_else(|| l.strip_prefix("authUrl:"))
        })
        .map(str::trim)
        .unwrap_or_else(|| panic!("examples/{backend}/00-connection.yaml names no endpoint"));
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

/// The demo's simulator endpoints written in examples/, in [`EXAMPLE_BACKENDS`] order.
pub fn demo_endpoints() -> Vec<String> {
    EXAMPLE_BACKENDS.iter().map(|b| demo_endpoint(b)).collect()
}

/// An example manifest with the demo's simulator endpoints replaced by `endpoint` (a path
/// after the endpoint, such as Keystone's `/v3`, is kept).
pub fn example(path: &str, endpoint: &str) -> String {
    demo_endpoints()
        .iter()
        .fold(example_text(path), |text, demo| {
            text.replace(demo, endpoint)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_example_connection_names_a_distinct_loopback_endpoint_and_the_demo_credentials() {
        let endpoints = demo_endpoints();
        for endpoint in &endpoints {
            assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
        }
        let mut unique = endpoints.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), endpoints.len(), "{endpoints:?}");
        for (backend, secret) in [
            ("coveo", DEMO_COVEO_API_KEY),
            ("keystone", DEMO_KEYSTONE_PASSWORD),
            ("jitsudo", DEMO_JITSUDO_API_KEY),
        ] {
            let text = example_text(&format!("{backend}/00-connection.yaml"));
            assert!(text.contains(secret), "{backend}: {secret}");
        }
        let coveo = example_text("coveo/00-connection.yaml");
        assert!(coveo.contains(&format!("organizationId: {COVEO_ORG}")));
    }
}
