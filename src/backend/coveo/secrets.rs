//! Secret values of a Coveo provider (`sensitiveParameters`, `userIdentities` passwords) and the
//! keyed fingerprint that stands in for them in status.
//!
//! Coveo masks sensitive values on read, so drift on them cannot be observed. The operator
//! records a fingerprint of what it last sent (an HMAC-SHA256 keyed with the installation's
//! [`FingerprintKey`], which readers of SecurityProviders cannot read, over the object's uid
//! and the values, so equal values in two objects fingerprint differently), and sends an
//! update exactly when the fingerprint of the current Secret values differs from the recorded
//! one. A fingerprint made with another key (a rotation, or the uid-keyed hash of earlier
//! versions) differs too: one re-send, then the new one is recorded.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::api::SecretKeyRef;
use crate::api::security_provider::CoveoProviderSpec;
use crate::backend::connect::{read_credential_secret, secret_key_value};
use crate::error::Error;
use crate::fingerprint_key::FingerprintKey;

/// Secret values keyed `parameters.<name>` or `userIdentities.<name>`. Debug never prints a
/// value, and the type is not serializable, so a value cannot reach a log line, status or an
/// Event by accident.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretMaterial(BTreeMap<String, String>);

impl std::fmt::Debug for SecretMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl SecretMaterial {
    /// Records one value.
    pub fn insert(&mut self, key: String, value: String) {
        self.0.insert(key, value);
    }

    /// Every value (to scrub them from remote text).
    pub fn values(&self) -> Vec<&str> {
        self.0.values().map(String::as_str).collect()
    }

    /// The value of `parameters.<name>`.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.0.get(&parameter_key(name)).map(String::as_str)
    }

    /// The password of `userIdentities.<name>`.
    pub fn password(&self, name: &str) -> Option<&str> {
        self.0.get(&identity_key(name)).map(String::as_str)
    }

    /// The fingerprint of every value for the object `object_uid`, keyed with `key`; None
    /// when there are no values. The uid is part of the message, so equal values in two
    /// objects fingerprint differently.
    pub fn fingerprint(&self, key: &FingerprintKey, object_uid: &str) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let pairs = self
            .0
            .iter()
            .flat_map(|(name, value)| [name.as_bytes(), value.as_bytes()]);
        Some(key.fingerprint(std::iter::once(object_uid.as_bytes()).chain(pairs)))
    }
}

fn parameter_key(name: &str) -> String {
    format!("parameters.{name}")
}

fn identity_key(name: &str) -> String {
    format!("userIdentities.{name}")
}

/// Every Secret key the provider reads, with the material key its value is stored under.
pub fn secret_refs(spec: &CoveoProviderSpec) -> Vec<(String, &SecretKeyRef)> {
    let parameters = spec
        .sensitive_parameters
        .iter()
        .map(|(name, reference)| (parameter_key(name), reference));
    let passwords = spec
        .user_identities
        .iter()
        .map(|(name, identity)| (identity_key(name), &identity.password_secret_ref));
    parameters.chain(passwords).collect()
}

/// Reads every value `spec` names from the Secrets of `api`'s namespace, each Secret once and
/// through the same checks as connection credentials (the `secprov.dev/credential` opt-in
/// label, refused types). A missing Secret or key is an error naming it, never a value.
pub async fn resolve(api: &Api<Secret>, spec: &CoveoProviderSpec) -> Result<SecretMaterial, Error> {
    let mut material = SecretMaterial::default();
    let mut read: BTreeMap<&str, Secret> = BTreeMap::new();
    for (key, reference) in secret_refs(spec) {
        if !read.contains_key(reference.name.as_str()) {
            let secret = read_credential_secret(api, &reference.name).await?;
            read.insert(reference.name.as_str(), secret);
        }
        let value = read
            .get(reference.name.as_str())
            .and_then(|secret| secret_key_value(secret, &reference.key))
            .ok_or_else(|| Error::SecretKeyMissing {
                name: reference.name.clone(),
                key: reference.key.clone(),
            })?;
        material.insert(key, value);
    }
    Ok(material)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(pairs: &[(&str, &str)]) -> SecretMaterial {
        let mut m = SecretMaterial::default();
        for (k, v) in pairs {
            m.insert((*k).into(), (*v).into());
        }
        m
    }

    fn key(byte: u8) -> FingerprintKey {
        FingerprintKey::from_bytes(&[byte; crate::fingerprint_key::KEY_LEN]).unwrap()
    }

    #[test]
    fn the_fingerprint_changes_with_any_value_the_object_or_the_key_and_never_shows_a_value() {
        let a = material(&[("parameters.token", "s3cret"), ("userIdentities.svc", "pw")]);
        let print = a.fingerprint(&key(1), "uid-1").expect("values present");
        let prefix = format!("hmac-sha256:{}:", key(1).id());
        assert!(print.starts_with(&prefix), "{print}");
        assert_eq!(print.len(), prefix.len() + 64);
        assert!(!print.contains("s3cret"));
        assert_eq!(a.fingerprint(&key(1), "uid-1"), Some(print.clone()));
        assert_ne!(a.fingerprint(&key(1), "uid-2"), Some(print.clone()));
        assert_ne!(a.fingerprint(&key(2), "uid-1"), Some(print.clone()));
        let rotated = material(&[
            ("parameters.token", "s3cret2"),
            ("userIdentities.svc", "pw"),
        ]);
        assert_ne!(rotated.fingerprint(&key(1), "uid-1"), Some(print.clone()));
        // Length prefixes: moving bytes between name and value changes the fingerprint.
        let shifted = material(&[("parameters.toke", "ns3cret"), ("userIdentities.svc", "pw")]);
        assert_ne!(shifted.fingerprint(&key(1), "uid-1"), Some(print));
        assert_eq!(
            SecretMaterial::default().fingerprint(&key(1), "uid-1"),
            None
        );
    }

    /// `status.coveo.secretsHash` as operator versions before issue 21 computed it: HMAC-SHA256
    /// keyed with the object's uid, which every reader of the object sees.
    fn uid_keyed_hash(material: &SecretMaterial, uid: &str) -> String {
        let pairs = material
            .0
            .iter()
            .flat_map(|(name, value)| [name.as_bytes(), value.as_bytes()]);
        format!("hmac-sha256:{}", hmac_hex(uid.as_bytes(), pairs))
    }

    fn hmac_hex<'a>(key: &[u8], parts: impl IntoIterator<Item = &'a [u8]>) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        let mut context = ring::hmac::Context::with_key(&key);
        for part in parts {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        let tag = context.sign();
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The offline attack of issue 21: from what `kubectl get securityprovider -o json` shows
    /// (the uid, the identity's name, the recorded fingerprint) and a dictionary, every key the
    /// object itself reveals is tried with both constructions. Returns the matching candidate.
    fn dictionary_guess(object: &serde_json::Value, dictionary: &[&str]) -> Option<String> {
        let uid = object["metadata"]["uid"].as_str()?;
        let recorded = object["status"]["coveo"]["secretsHash"].as_str()?;
        let tag = recorded.rsplit(':').next()?;
        let key_id = recorded
            .split(':')
            .nth(1)
            .filter(|_| recorded.matches(':').count() == 2);
        let identity = object["spec"]["coveo"]["userIdentities"]
            .as_object()?
            .keys()
            .next()?
            .clone();
        let visible_keys = [Some(uid), key_id, Some("")];
        dictionary.iter().find_map(|candidate| {
            let name = identity_key(&identity);
            let guess = material(&[(name.as_str(), *candidate)]);
            let old_construction = uid_keyed_hash(&guess, uid) == recorded;
            let new_construction = visible_keys.iter().flatten().any(|k| {
                let pairs = guess
                    .0
                    .iter()
                    .flat_map(|(n, v)| [n.as_bytes(), v.as_bytes()]);
                hmac_hex(k.as_bytes(), std::iter::once(uid.as_bytes()).chain(pairs)) == tag
            });
            (old_construction || new_construction).then(|| (*candidate).to_owned())
        })
    }

    fn object_json(uid: &str, secrets_hash: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "secprov.dev/v1alpha1",
            "kind": "SecurityProvider",
            "metadata": {"name": "db", "namespace": "team-a", "uid": uid},
            "spec": {"connectionRef": "coveo", "coveo": {"type": "DATABASE", "userIdentities": {
                "crawler": {"userName": "svc", "passwordSecretRef": {"name": "c", "key": "pw"}}}}},
            "status": {"coveo": {"secretsHash": secrets_hash}},
        })
    }

    #[test]
    fn the_offline_dictionary_guess_finds_the_uid_keyed_password_but_not_the_installation_keyed_one()
     {
        let uid = "5d0c6f1e-8a3b-4c2d-9e1f-0a1b2c3d4e5f";
        let dictionary = [
            "123456",
            "password",
            "letmein",
            "Winter2026!",
            "qwerty",
            "hunter2",
        ];
        let secret = material(&[("userIdentities.crawler", "Winter2026!")]);

        // Before: the status and the uid are enough.
        let old = object_json(uid, &uid_keyed_hash(&secret, uid));
        assert_eq!(
            dictionary_guess(&old, &dictionary).as_deref(),
            Some("Winter2026!")
        );

        // Now: the same search, with every key the object shows, matches no candidate.
        let (installation, _) = FingerprintKey::generate().unwrap();
        let print = secret.fingerprint(&installation, uid).unwrap();
        let new = object_json(uid, &print);
        assert_eq!(dictionary_guess(&new, &dictionary), None);
        // Control: with the key (which only the operator can read) the same dictionary finds
        // it, so the key alone stands between a reader and the password.
        let with_key = dictionary.iter().find(|c| {
            material(&[("userIdentities.crawler", **c)]).fingerprint(&installation, uid)
                == Some(print.clone())
        });
        assert_eq!(with_key, Some(&"Winter2026!"));
    }

    #[test]
    fn debug_lists_names_only() {
        let a = material(&[("parameters.token", "s3cret")]);
        let shown = format!("{a:?}");
        assert!(shown.contains("parameters.token") && !shown.contains("s3cret"));
    }
}
