//! Secret values of a Coveo provider (`sensitiveParameters`, `userIdentities` passwords) and the
//! keyed hash that stands in for them in status.
//!
//! Coveo masks sensitive values on read, so drift on them cannot be observed. The operator
//! records an HMAC-SHA256 of what it last sent, keyed with the object's uid (so a recorded hash
//! cannot be checked offline against a dictionary without the uid, and equal values in two
//! objects hash differently), and sends an update exactly when the hash of the current Secret
//! values differs from the recorded one.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use ring::hmac;

use crate::api::SecretKeyRef;
use crate::api::security_provider::CoveoProviderSpec;
use crate::backend::connect::{read_credential_secret, secret_key_value};
use crate::error::Error;

/// Prefix of a recorded hash, naming the algorithm.
pub const HASH_PREFIX: &str = "hmac-sha256:";

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

    /// HMAC-SHA256 of every value, keyed with `object_key` (the object's uid); None when there
    /// are no values. Keys and values are length-prefixed so no two maps encode alike.
    pub fn keyed_hash(&self, object_key: &str) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, object_key.as_bytes());
        let mut context = hmac::Context::with_key(&key);
        for (name, value) in &self.0 {
            for part in [name.as_bytes(), value.as_bytes()] {
                context.update(&(part.len() as u64).to_be_bytes());
                context.update(part);
            }
        }
        let tag = context.sign();
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Some(format!("{HASH_PREFIX}{hex}"))
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

    #[test]
    fn the_hash_changes_with_any_value_or_the_object_and_never_shows_the_value() {
        let a = material(&[("parameters.token", "s3cret"), ("userIdentities.svc", "pw")]);
        let hash = a.keyed_hash("uid-1").expect("values present");
        assert!(hash.starts_with(HASH_PREFIX));
        assert_eq!(hash.len(), HASH_PREFIX.len() + 64);
        assert!(!hash.contains("s3cret"));
        assert_eq!(a.keyed_hash("uid-1"), Some(hash.clone()), "deterministic");
        assert_ne!(
            a.keyed_hash("uid-2"),
            Some(hash.clone()),
            "keyed per object"
        );
        let rotated = material(&[
            ("parameters.token", "s3cret2"),
            ("userIdentities.svc", "pw"),
        ]);
        assert_ne!(rotated.keyed_hash("uid-1"), Some(hash.clone()));
        // Length prefixes: moving bytes between key and value changes the hash.
        let shifted = material(&[("parameters.toke", "ns3cret"), ("userIdentities.svc", "pw")]);
        assert_ne!(shifted.keyed_hash("uid-1"), Some(hash));
        assert_eq!(SecretMaterial::default().keyed_hash("uid-1"), None);
    }

    #[test]
    fn debug_lists_names_only() {
        let a = material(&[("parameters.token", "s3cret")]);
        let shown = format!("{a:?}");
        assert!(shown.contains("parameters.token") && !shown.contains("s3cret"));
    }
}
