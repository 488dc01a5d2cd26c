//! Remote text scrubbed of a connection's secret values before it reaches a condition, an
//! Event or a log line: [`Scrubber`] and [`ScrubbedBackend`], the wrapper every built client
//! is returned in.
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;

use super::{ObservedProvider, ProviderBackend, ProviderConfig, ProviderKey, RemoteHealth};
use crate::error::RemoteError;

/// Replaces a connection's secret values in text, verbatim and base64-encoded (standard and
/// URL-safe alphabets, at every byte alignment, so a value inside a larger encoded blob such
/// as `user:password` is found too). Remote error text goes through this before it reaches a
/// condition, an Event or a log line: an endpoint that echoes the credential back cannot
/// publish it.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// Longest first, so a value is replaced before any shorter pattern inside it.
    patterns: Vec<String>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrubber({} patterns)", self.patterns.len())
    }
}

/// What a scrubbed value is replaced with.
pub const SCRUBBED: &str = "[redacted]";

/// Shortest base64 fragment worth scrubbing: shorter ones match ordinary words.
const MIN_ENCODED_FRAGMENT: usize = 6;

impl Scrubber {
    /// A scrubber for these secret values.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns = Vec::new();
        for value in values.into_iter().filter(|v| !v.is_empty()) {
            patterns.push(value.to_owned());
            patterns.extend(base64_fragments(value.as_bytes()));
        }
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        patterns.dedup();
        Scrubber { patterns }
    }

    /// `text` with every known secret value replaced by [`SCRUBBED`].
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for pattern in &self.patterns {
            if text.contains(pattern.as_str()) {
                text = text.replace(pattern.as_str(), SCRUBBED);
            }
        }
        text
    }

    /// A remote error with its message, code and request id scrubbed.
    pub fn scrub_error(&self, mut e: RemoteError) -> RemoteError {
        e.message = self.scrub(&e.message);
        e.code = e.code.map(|c| self.scrub(&c));
        e.request_id = e.request_id.map(|r| self.scrub(&r));
        e
    }
}

/// The base64 characters that depend only on `value`'s bytes, for each of the three byte
/// alignments it can have inside a longer encoded string, in both alphabets; padded and
/// unpadded forms of the whole value are covered by the alignment-0 fragment.
fn base64_fragments(value: &[u8]) -> Vec<String> {
    let engines = [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut fragments = Vec::new();
    for prefix in 0..3usize {
        let mut bytes = vec![0u8; prefix];
        bytes.extend_from_slice(value);
        let (value_start, value_end) = (8 * prefix, 8 * (prefix + value.len()));
        for engine in engines {
            let encoded = engine.encode(&bytes);
            let fragment: String = encoded
                .char_indices()
                .filter(|(i, _)| 6 * i >= value_start && 6 * i + 6 <= value_end)
                .map(|(_, c)| c)
                .collect();
            if fragment.len() >= MIN_ENCODED_FRAGMENT {
                fragments.push(fragment);
            }
        }
    }
    fragments
}

/// A backend whose errors and remote status text are scrubbed of the connection's secrets.
pub struct ScrubbedBackend {
    inner: Arc<dyn ProviderBackend>,
    scrubber: Scrubber,
}

impl ScrubbedBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ProviderBackend>, scrubber: Scrubber) -> Self {
        ScrubbedBackend { inner, scrubber }
    }

    fn error(&self, e: RemoteError) -> RemoteError {
        self.scrubber.scrub_error(e)
    }

    /// The remote text an observed provider carries (health message, and what the backend's
    /// status block carries: [`super::Backend::scrub_status`]).
    fn observed(&self, mut o: ObservedProvider) -> ObservedProvider {
        match &mut o.health {
            RemoteHealth::Healthy => {}
            RemoteHealth::Progressing { message, .. } | RemoteHealth::Degraded { message, .. } => {
                *message = self.scrubber.scrub(message);
            }
        }
        o.state.scrub_blocks(&self.scrubber);
        o
    }
}

#[async_trait]
impl ProviderBackend for ScrubbedBackend {
    async fn observe(&self, key: &ProviderKey) -> Result<Option<ObservedProvider>, RemoteError> {
        match self.inner.observe(key).await {
            Ok(o) => Ok(o.map(|o| self.observed(o))),
            Err(e) => Err(self.error(e)),
        }
    }

    async fn create(&self, desired: &ProviderConfig) -> Result<ObservedProvider, RemoteError> {
        let result = self.inner.create(desired).await;
        // A write also carries the provider's own secret values: a remote quoting them back
        // in its error must not put them in a condition either.
        let sent = Scrubber::new(desired.secret_values());
        result
            .map(|o| self.observed(o))
            .map_err(|e| sent.scrub_error(self.error(e)))
    }

    async fn update(
        &self,
        observed: &ObservedProvider,
        desired: &ProviderConfig,
    ) -> Result<ObservedProvider, RemoteError> {
        let result = self.inner.update(observed, desired).await;
        let sent = Scrubber::new(desired.secret_values());
        result
            .map(|o| self.observed(o))
            .map_err(|e| sent.scrub_error(self.error(e)))
    }

    async fn observe_details(
        &self,
        desired: Option<&ProviderConfig>,
        observed: &mut ObservedProvider,
    ) -> Result<(), RemoteError> {
        let result = self.inner.observe_details(desired, observed).await;
        result.map_err(|e| self.error(e))
    }

    async fn delete(
        &self,
        remote_id: &str,
        desired: Option<&ProviderConfig>,
    ) -> Result<bool, RemoteError> {
        self.inner
            .delete(remote_id, desired)
            .await
            .map_err(|e| self.error(e))
    }

    async fn refresh(&self, remote_id: &str) -> Result<bool, RemoteError> {
        self.inner
            .refresh(remote_id)
            .await
            .map_err(|e| self.error(e))
    }

    async fn list(&self) -> Result<Vec<ObservedProvider>, RemoteError> {
        let result = self.inner.list().await;
        result
            .map(|all| all.into_iter().map(|o| self.observed(o)).collect())
            .map_err(|e| self.error(e))
    }

    async fn verify_credentials(&self) -> Result<(), RemoteError> {
        self.inner
            .verify_credentials()
            .await
            .map_err(|e| self.error(e))
    }

    async fn observe_each(
        &self,
        each: &mut (dyn FnMut(ObservedProvider) + Send),
    ) -> Result<(), RemoteError> {
        let result = self
            .inner
            .observe_each(&mut |o| each(self.observed(o)))
            .await;
        result.map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RemoteErrorKind;

    const KEY: &str = "xx5a1b2c3d-4e5f-secret-key";

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn verbatim_values_are_replaced() {
        let s = Scrubber::new([KEY, "hunter2!"]);
        let text = format!("invalid key {KEY} (password hunter2!)");
        let scrubbed = s.scrub(&text);
        assert!(!scrubbed.contains(KEY) && !scrubbed.contains("hunter2!"));
        assert_eq!(
            scrubbed,
            format!("invalid key {SCRUBBED} (password {SCRUBBED})")
        );
    }

    #[test]
    fn base64_of_the_value_is_replaced_alone_and_inside_a_larger_blob() {
        let s = Scrubber::new([KEY]);
        let alone = b64(KEY.as_bytes());
        assert!(
            !s.scrub(&format!("echo {alone}"))
                .contains(&alone[..alone.len() - 4])
        );
        // Basic-auth style, at every alignment of the value in the encoded blob.
        for prefix in ["u:", "us:", "use:"] {
            let blob = b64(format!("{prefix}{KEY}").as_bytes());
            let scrubbed = s.scrub(&format!("Authorization: Basic {blob}"));
            assert!(scrubbed.contains(SCRUBBED), "{prefix}: {scrubbed}");
            // What is left of the blob cannot be decoded back to the key.
            assert!(scrubbed.len() < format!("Authorization: Basic {blob}").len());
        }
        let url_safe =
            base64::engine::general_purpose::URL_SAFE.encode("\u{fb}\u{ff}k3y-?>?>".as_bytes());
        let s = Scrubber::new(["\u{fb}\u{ff}k3y-?>?>"]);
        assert!(s.scrub(&url_safe).contains(SCRUBBED));
    }

    #[test]
    fn text_without_secrets_is_unchanged() {
        let s = Scrubber::new([KEY]);
        let text = "coveo create failed (HTTP 400): id too long";
        assert_eq!(s.scrub(text), text);
        assert_eq!(Scrubber::new([""]).scrub(text), text);
    }

    #[test]
    fn remote_errors_are_scrubbed_in_message_code_and_request_id() {
        let s = Scrubber::new([KEY]);
        let mut e = RemoteError::transport(
            "coveo",
            "get",
            RemoteErrorKind::Unauthorized,
            format!("bad key {KEY}"),
        );
        e.code = Some(format!("KEY_{KEY}"));
        e.request_id = Some(b64(KEY.as_bytes()));
        let e = s.scrub_error(e);
        let text = format!("{e} {:?} {:?}", e.code, e.request_id);
        assert!(!text.contains(KEY), "{text}");
        assert!(!text.contains(&b64(KEY.as_bytes())[..8]), "{text}");
    }

    /// A remote that quotes back whatever secret value it was sent.
    struct Echo;

    fn echo_error(desired: &ProviderConfig) -> RemoteError {
        let quoted = desired.secret_values().join(",");
        RemoteError::transport(
            "coveo",
            "update",
            RemoteErrorKind::Rejected,
            format!("bad value {quoted}"),
        )
    }

    #[async_trait]
    impl ProviderBackend for Echo {
        async fn observe(&self, _: &ProviderKey) -> Result<Option<ObservedProvider>, RemoteError> {
            Ok(None)
        }
        async fn create(&self, desired: &ProviderConfig) -> Result<ObservedProvider, RemoteError> {
            Err(echo_error(desired))
        }
        async fn update(
            &self,
            _: &ObservedProvider,
            desired: &ProviderConfig,
        ) -> Result<ObservedProvider, RemoteError> {
            Err(echo_error(desired))
        }
        async fn delete(&self, _: &str, _: Option<&ProviderConfig>) -> Result<bool, RemoteError> {
            Ok(false)
        }
        async fn refresh(&self, _: &str) -> Result<bool, RemoteError> {
            Ok(false)
        }
        async fn list(&self) -> Result<Vec<ObservedProvider>, RemoteError> {
            Ok(vec![])
        }
        async fn verify_credentials(&self) -> Result<(), RemoteError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_write_error_quoting_a_provider_secret_value_is_scrubbed() {
        use crate::backend::coveo::{CoveoConfig, secrets::SecretMaterial};
        let spec =
            serde_yaml::from_str("sensitiveParameters: {ApiToken: {name: creds, key: token}}")
                .unwrap();
        let mut config = CoveoConfig::desired("db", "db", &spec);
        let mut material = SecretMaterial::default();
        material.insert("parameters.ApiToken".into(), "tok-ECHOED-1234".into());
        config.set_secrets(material, None, "uid");
        let desired = ProviderConfig::Coveo(config);
        let backend = ScrubbedBackend::new(Arc::new(Echo), Scrubber::new(["connection-key"]));
        let created = backend.create(&desired).await.unwrap_err();
        assert!(
            !created.to_string().contains("tok-ECHOED-1234"),
            "{created}"
        );
        assert!(created.to_string().contains(SCRUBBED), "{created}");
    }
}
