//! The per-installation key of the secrets fingerprint (`secretsHash` in the backend's status
//! block).
//!
//! The fingerprint stands in for secret values that the remote system masks on read. Keyed
//! with something every reader of the SecurityProvider sees (its uid, before issue 21), anyone
//! who can read the object can test guesses offline. Keyed with this key, kept in a Secret of
//! the operator's own namespace that only the operator may read, nobody else can. Each
//! fingerprint names the key it was made with by a short id, so a new key (a rotation) makes
//! every recorded fingerprint differ exactly once.
use std::collections::BTreeMap;

use anyhow::Context as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};

/// Name of the key's Secret when `--fingerprint-key-secret` does not say otherwise.
pub const DEFAULT_SECRET_NAME: &str = "secprov-operator-fingerprint-key";
/// The data key of the Secret holding the key bytes.
pub const SECRET_DATA_KEY: &str = "key";
/// Prefix of every fingerprint, naming the algorithm.
pub const FINGERPRINT_PREFIX: &str = "hmac-sha256:";
/// Bytes of a generated key, and the fewest a loaded one may have: guessing it must be as
/// hard as the HMAC itself.
pub const KEY_LEN: usize = 32;
/// Bytes of the key id: enough to tell keys apart, far too few to say anything about the key.
const KEY_ID_LEN: usize = 6;

/// The fingerprint key. Debug shows the id only, so the key cannot reach a log line.
#[derive(Clone)]
pub struct FingerprintKey {
    key: hmac::Key,
    id: String,
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FingerprintKey")
            .field("id", &self.id)
            .finish()
    }
}

impl FingerprintKey {
    /// The key made of `bytes`; None when shorter than [`KEY_LEN`].
    pub fn from_bytes(bytes: &[u8]) -> Option<FingerprintKey> {
        if bytes.len() < KEY_LEN {
            return None;
        }
        // A hash of the key, domain-separated from the HMAC: it names the key without
        // revealing anything a guess could be tested against.
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(b"secprov fingerprint key id v1\0");
        context.update(bytes);
        let id = hex(&context.finish().as_ref()[..KEY_ID_LEN]);
        Some(FingerprintKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
            id,
        })
    }

    /// A new random key (a fresh installation, or a process given no key: its fingerprints
    /// then change once per start).
    pub fn generate() -> anyhow::Result<(FingerprintKey, Vec<u8>)> {
        let mut bytes = vec![0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
        let key = FingerprintKey::from_bytes(&bytes).context("a generated key is long enough")?;
        Ok((key, bytes))
    }

    /// The short, non-reversible id recorded in each fingerprint.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `hmac-sha256:<key id>:<hex HMAC>` over `parts`, each length-prefixed so that no two
    /// sequences encode alike.
    pub fn fingerprint<'a>(&self, parts: impl IntoIterator<Item = &'a [u8]>) -> String {
        let mut context = hmac::Context::with_key(&self.key);
        for part in parts {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        let tag = hex(context.sign().as_ref());
        format!("{FINGERPRINT_PREFIX}{}:{tag}", self.id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key from Secret `name` of `api`'s namespace, created with a random key when absent.
/// Create-if-absent: replicas starting at once all end up with the one the API server
/// stored first. A Secret without a usable key is an error, never overwritten: replacing it
/// is a rotation, which is the administrator's decision.
pub async fn load_or_create(api: &Api<Secret>, name: &str) -> anyhow::Result<FingerprintKey> {
    let where_ = format!(
        "Secret {}/{name} (the secrets fingerprint key)",
        api.namespace().unwrap_or_default()
    );
    if let Some(secret) = api
        .get_opt(name)
        .await
        .with_context(|| rbac_hint(&where_))?
    {
        return key_of(&secret).with_context(|| format!("{where_} is unusable"));
    }
    let (_, bytes) = FingerprintKey::generate()?;
    match api
        .create(&PostParams::default(), &key_secret(name, bytes))
        .await
    {
        Ok(created) => {
            tracing::info!(secret = name, "created the secrets fingerprint key");
            key_of(&created).with_context(|| format!("{where_} is unusable"))
        }
        // Another replica created it first: use theirs.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let secret = api.get(name).await.with_context(|| rbac_hint(&where_))?;
            key_of(&secret).with_context(|| format!("{where_} is unusable"))
        }
        Err(e) => Err(e).with_context(|| rbac_hint(&where_)),
    }
}

fn rbac_hint(where_: &str) -> String {
    format!(
        "cannot read or create {where_}; the operator needs get on that Secret and create on Secrets in its namespace (deploy/rbac.yaml, Role secprov-operator-fingerprint-key)"
    )
}

/// The key of a Secret written by [`key_secret`] (or by hand, with at least [`KEY_LEN`]
/// bytes under `key`).
pub fn key_of(secret: &Secret) -> anyhow::Result<FingerprintKey> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(SECRET_DATA_KEY))
        .with_context(|| format!("no data key {SECRET_DATA_KEY:?}"))?;
    FingerprintKey::from_bytes(&bytes.0)
        .with_context(|| format!("data key {SECRET_DATA_KEY:?} holds fewer than {KEY_LEN} bytes"))
}

/// The Secret of a new key. Immutable: a rotation is a deletion (and a restart), never an
/// edit that replicas could see at different times.
pub fn key_secret(name: &str, bytes: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "secprov-operator".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            SECRET_DATA_KEY.to_owned(),
            ByteString(bytes),
        )])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_named_by_a_short_id_and_never_shown() {
        let key = FingerprintKey::from_bytes(&[7u8; KEY_LEN]).unwrap();
        assert_eq!(key.id().len(), 2 * KEY_ID_LEN);
        assert_eq!(
            FingerprintKey::from_bytes(&[7u8; KEY_LEN]).unwrap().id(),
            key.id(),
            "the id is a function of the key"
        );
        assert_ne!(
            FingerprintKey::from_bytes(&[8u8; KEY_LEN]).unwrap().id(),
            key.id()
        );
        assert!(FingerprintKey::from_bytes(&[7u8; KEY_LEN - 1]).is_none());
        assert_eq!(
            format!("{key:?}"),
            format!("FingerprintKey {{ id: {:?} }}", key.id())
        );
        let (a, _) = FingerprintKey::generate().unwrap();
        let (b, _) = FingerprintKey::generate().unwrap();
        assert_ne!(a.id(), b.id(), "generated keys differ");
    }

    #[test]
    fn a_fingerprint_names_its_key_and_length_prefixes_its_parts() {
        let key = FingerprintKey::from_bytes(&[1u8; KEY_LEN]).unwrap();
        let print = key.fingerprint([&b"ab"[..], b"c"]);
        let rest = print.strip_prefix(FINGERPRINT_PREFIX).unwrap();
        let (id, tag) = rest.split_once(':').unwrap();
        assert_eq!((id, tag.len()), (key.id(), 64));
        assert_ne!(key.fingerprint([&b"a"[..], b"bc"]), print);
    }

    /// A mocked API server answering each request with the next of `answers` (status,
    /// body), recording `METHOD path` of each.
    fn scripted_api(
        answers: Vec<(u16, serde_json::Value)>,
    ) -> (Api<Secret>, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for (status, body) in answers {
                let Some((request, send)) = handle.next_request().await else {
                    return;
                };
                let line = format!("{} {}", request.method(), request.uri().path());
                log.lock().unwrap().push(line);
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string().into_bytes()))
                    .unwrap();
                send.send_response(response);
            }
        });
        let client = kube::Client::new(service, "ops");
        (Api::namespaced(client, "ops"), seen)
    }

    fn status(code: u16, reason: &str) -> serde_json::Value {
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": reason, "code": code, "message": reason})
    }

    #[tokio::test]
    async fn a_replica_that_loses_the_create_race_uses_the_key_that_won() {
        let theirs =
            serde_json::to_value(key_secret(DEFAULT_SECRET_NAME, vec![9u8; KEY_LEN])).unwrap();
        let (api, seen) = scripted_api(vec![
            (404, status(404, "NotFound")),
            (409, status(409, "AlreadyExists")),
            (200, theirs),
        ]);
        let key = load_or_create(&api, DEFAULT_SECRET_NAME).await.unwrap();
        assert_eq!(
            key.id(),
            FingerprintKey::from_bytes(&[9u8; KEY_LEN]).unwrap().id()
        );
        let path = format!("/api/v1/namespaces/ops/secrets/{DEFAULT_SECRET_NAME}");
        assert_eq!(
            *seen.lock().unwrap(),
            [
                format!("GET {path}"),
                "POST /api/v1/namespaces/ops/secrets".to_owned(),
                format!("GET {path}"),
            ]
        );
    }

    #[tokio::test]
    async fn a_secret_without_a_usable_key_is_refused_never_replaced() {
        let short = serde_json::to_value(key_secret(DEFAULT_SECRET_NAME, vec![1u8; 4])).unwrap();
        let (api, seen) = scripted_api(vec![(200, short)]);
        let error = load_or_create(&api, DEFAULT_SECRET_NAME).await.unwrap_err();
        assert!(
            format!("{error:#}").contains("fewer than 32 bytes"),
            "{error:#}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1, "no write");
        let (api, _) = scripted_api(vec![(403, status(403, "Forbidden"))]);
        let error = load_or_create(&api, DEFAULT_SECRET_NAME).await.unwrap_err();
        assert!(
            format!("{error:#}").contains("secprov-operator-fingerprint-key"),
            "{error:#}"
        );
    }

    #[test]
    fn the_secret_round_trips_and_a_short_key_is_refused() {
        let secret = key_secret(DEFAULT_SECRET_NAME, vec![3u8; KEY_LEN]);
        assert_eq!(secret.immutable, Some(true));
        let key = key_of(&secret).unwrap();
        assert_eq!(
            key.id(),
            FingerprintKey::from_bytes(&[3u8; KEY_LEN]).unwrap().id()
        );
        let short = key_secret(DEFAULT_SECRET_NAME, vec![3u8; 8]);
        assert!(key_of(&short).is_err());
        assert!(key_of(&Secret::default()).is_err());
    }
}
