//! The identity of a remote system, normalized once so that every comparison and every record
//! of "which system" agrees however a user spells it. Two spellings of one system (a trailing
//! `/`, an explicit default port, host or scheme case, Keystone's optional `/v3`, a tenant UUID
//! in upper case) are one system; a different host, port, path, organization or tenant is
//! another. Host aliases (`localhost` and `127.0.0.1`, two DNS names of one load balancer) are
//! not resolved: names are compared, not addresses (DNS answers change and differ by client),
//! and the remote provider's creation evidence catches a provider reached under two names
//! (see `controller::ownership`).
use url::Url;

/// Path segment Keystone endpoints may carry or not (`https://iam.example/v3` and
/// `https://iam.example` are one identity service: the client adds `/v3` when it is missing).
const KEYSTONE_VERSION_SEGMENT: &str = "/v3";

/// An endpoint in canonical form: scheme and host lower-cased, the scheme's default port
/// dropped, user info, query and fragment dropped, repeated and trailing `/` dropped, and a
/// trailing `/v3` dropped. Text that is not a URL is trimmed and lower-cased (the CRD accepts
/// only URLs, so this is a fallback for values recorded by hand).
pub fn canonical_endpoint(raw: &str) -> String {
    let trimmed = raw.trim();
    let Ok(mut url) = Url::parse(trimmed) else {
        return trimmed.trim_end_matches('/').to_ascii_lowercase();
    };
    // The url crate lower-cases scheme and host and drops the default port of http(s).
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    if let Some(host) = url.host_str().map(str::to_owned)
        && host.len() > 1
        && host.ends_with('.')
    {
        // `host.` is the fully qualified spelling of `host`.
        let _ = url.set_host(Some(host.trim_end_matches('.')));
    }
    let mut path: String = url
        .path()
        .split('/')
        .filter(|segment| !segment.is_empty())
        .fold(String::new(), |mut path, segment| {
            path.push('/');
            path.push_str(segment);
            path
        });
    if path
        .to_ascii_lowercase()
        .ends_with(KEYSTONE_VERSION_SEGMENT)
    {
        path.truncate(path.len() - KEYSTONE_VERSION_SEGMENT.len());
    }
    let origin = url.origin().ascii_serialization();
    format!("{origin}{path}")
}

/// A partition id in canonical form: Coveo organization ids (they are DNS labels, as in
/// `{organizationId}.org.coveo.com`) and JITSudo tenant ids (UUIDs) are case-insensitive, so
/// lower-cased; surrounding white space dropped.
pub fn canonical_scope(raw: &str) -> String {
    raw.trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs that name one remote system.
    const SAME: &[(&str, &str)] = &[
        // Coveo
        (
            "https://platform.cloud.coveo.com",
            "https://platform.cloud.coveo.com/",
        ),
        (
            "https://Platform.Cloud.Coveo.com",
            "https://platform.cloud.coveo.com",
        ),
        (
            "HTTPS://platform.cloud.coveo.com:443/",
            "https://platform.cloud.coveo.com",
        ),
        (
            "https://platform.cloud.coveo.com.",
            "https://platform.cloud.coveo.com",
        ),
        ("http://127.0.0.1:18089", "http://127.0.0.1:18089//"),
        ("http://localhost:80", "http://LOCALHOST"),
        (
            "https://user:secret@platform.cloud.coveo.com/?x=1#f",
            "https://platform.cloud.coveo.com",
        ),
        // Keystone: with and without /v3, and its trailing slash
        (
            "https://iam.eu-de.otc.t-systems.com/v3",
            "https://iam.eu-de.otc.t-systems.com",
        ),
        (
            "https://iam.eu-de.otc.t-systems.com/v3/",
            "https://IAM.eu-de.otc.t-systems.com:443",
        ),
        (
            "https://cloud.example/identity/v3",
            "https://cloud.example/identity/",
        ),
        // JITSudo
        ("https://api.jitsudo.io/", "https://api.jitsudo.io"),
        ("http://[::1]:8080/", "http://[0:0:0:0:0:0:0:1]:8080"),
    ];

    /// Pairs that name two remote systems.
    const DIFFERENT: &[(&str, &str)] = &[
        (
            "https://platform.cloud.coveo.com",
            "https://platform-eu.cloud.coveo.com",
        ),
        ("http://127.0.0.1:18089", "http://127.0.0.1:18090"),
        ("https://host", "http://host"),
        ("https://host:8443", "https://host"),
        ("https://cloud.example/identity", "https://cloud.example"),
        ("https://cloud.example/a/v3", "https://cloud.example/b/v3"),
    ];

    #[test]
    fn spellings_of_one_endpoint_are_one_system() {
        for (a, b) in SAME {
            assert_eq!(canonical_endpoint(a), canonical_endpoint(b), "{a} vs {b}");
        }
    }

    #[test]
    fn different_endpoints_stay_different() {
        for (a, b) in DIFFERENT {
            assert_ne!(canonical_endpoint(a), canonical_endpoint(b), "{a} vs {b}");
        }
    }

    #[test]
    fn the_canonical_form_is_stable_and_keeps_no_credentials() {
        for (a, _) in SAME.iter().chain(DIFFERENT) {
            let once = canonical_endpoint(a);
            assert_eq!(canonical_endpoint(&once), once, "{a}");
            assert!(!once.contains("secret") && !once.ends_with('/'), "{once}");
        }
        assert_eq!(
            canonical_endpoint("HTTPS://Platform.Cloud.Coveo.com:443/"),
            "https://platform.cloud.coveo.com"
        );
    }

    #[test]
    fn tenant_and_organization_ids_ignore_case() {
        assert_eq!(
            canonical_scope("2489E9AD-2EE2-4E00-8EC9-32D5F69181C0"),
            canonical_scope("2489e9ad-2ee2-4e00-8ec9-32d5f69181c0")
        );
        assert_eq!(canonical_scope(" MyOrg "), "myorg");
        assert_ne!(canonical_scope("org-a"), canonical_scope("org-b"));
    }
}
