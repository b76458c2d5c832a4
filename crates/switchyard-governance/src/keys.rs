//! API key material: generation, the stored hash, and constant-time checks.
//!
//! A key reads `sy-<id>.<secret>`: the recognisable `sy-` prefix lets
//! secret scanners and people spot it, the id finds the stored record
//! without a scan, and the 256-bit secret is stored only as its SHA-256.
//! A slow password hash (argon2) buys nothing for a random 256-bit secret
//! and would cost milliseconds on every cache miss.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every Switchyard key starts with.
pub const KEY_PREFIX: &str = "sy-";

/// A newly made key: the text shown once, and what is stored.
#[derive(Clone)]
pub struct NewKey {
    /// The public id (`key_` + 16 hex digits).
    pub id: String,
    /// The whole key, shown to its owner once.
    pub secret_text: String,
    /// SHA-256 of the secret part, hex.
    pub secret_hash: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.id)
            .field("secret_text", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A key as presented: its id and the secret to check.
pub struct PresentedKey<'a> {
    /// The id part.
    pub id: &'a str,
    /// The secret part.
    pub secret: &'a str,
}

/// The operating system's random generator failed.
#[derive(Debug, thiserror::Error)]
#[error("no randomness available: {0}")]
pub struct RandomnessError(String);

fn random_hex(bytes: usize) -> Result<String, RandomnessError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|e| RandomnessError(e.to_string()))?;
    Ok(hex::encode(buffer))
}

/// A fresh random id with `prefix` (`ten_`, `team_`, ...).
pub fn new_id(prefix: &str) -> Result<String, RandomnessError> {
    Ok(format!("{prefix}{}", random_hex(8)?))
}

/// Makes a new key.
pub fn generate() -> Result<NewKey, RandomnessError> {
    let id = new_id("key_")?;
    let secret = random_hex(32)?;
    Ok(NewKey {
        secret_text: format!("{KEY_PREFIX}{id}.{secret}"),
        secret_hash: hash_secret(&secret),
        id,
    })
}

/// SHA-256 of a secret, hex.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits a presented key; `None` when it is not shaped like one of ours.
pub fn parse(text: &str) -> Option<PresentedKey<'_>> {
    let rest = text.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('.')?;
    let well_formed = id.len() == 20
        && id.starts_with("key_")
        && id[4..].bytes().all(|b| b.is_ascii_hexdigit())
        && !secret.is_empty();
    well_formed.then_some(PresentedKey { id, secret })
}

/// Whether `secret` hashes to `stored_hash`, in time independent of where
/// they differ.
pub fn verify(secret: &str, stored_hash: &str) -> bool {
    let presented = hash_secret(secret);
    presented.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// Whether `presented` is `expected` (the master key), in constant time:
/// both are hashed first, so neither length nor content leaks.
pub fn same_secret(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_and_verifies_and_only_its_hash_is_kept() {
        let key = generate().unwrap();
        assert!(key.secret_text.starts_with("sy-key_"));
        let presented = parse(&key.secret_text).unwrap();
        assert_eq!(presented.id, key.id);
        assert!(verify(presented.secret, &key.secret_hash));
        assert!(!key.secret_hash.contains(presented.secret));
        assert!(!verify("wrong", &key.secret_hash));
        assert!(!format!("{key:?}").contains(presented.secret));
    }

    #[test]
    fn foreign_or_mangled_keys_do_not_parse() {
        assert!(parse("sk-proj-abc").is_none());
        assert!(parse("sy-key_0123.secret").is_none());
        assert!(parse("sy-key_0123456789abcdef").is_none());
        assert!(parse("sy-key_0123456789abcdeg.x").is_none());
        assert!(parse("sy-key_0123456789abcdef.").is_none());
    }

    #[test]
    fn keys_are_unique() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.id, b.id);
        assert_ne!(a.secret_hash, b.secret_hash);
    }

    #[test]
    fn master_key_comparison() {
        assert!(same_secret("m", "m"));
        assert!(!same_secret("m", "n"));
        assert!(!same_secret("", "n"));
    }
}
