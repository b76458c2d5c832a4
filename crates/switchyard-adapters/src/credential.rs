//! Credentials for upstreams, as secret values: never printed (`Debug`
//! shows `[REDACTED]`), zeroed when dropped, read only where a request is
//! signed or its headers are built.

use secrecy::{ExposeSecret, SecretString};

/// An API key, token or secret key for an upstream.
#[derive(Clone)]
pub struct Credential(SecretString);

impl Credential {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(SecretString::from(secret.into()))
    }

    /// The secret itself, for the request that carries it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

/// Configurations compare their credentials to tell whether a reload
/// changed them.
impl PartialEq for Credential {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Credential {}

impl From<String> for Credential {
    fn from(secret: String) -> Self {
        Self::new(secret)
    }
}

impl From<&str> for Credential {
    fn from(secret: &str) -> Self {
        Self::new(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let key = Credential::new("sk-live-123");
        assert!(!format!("{key:?}").contains("sk-live"));
        assert_eq!(key.expose(), "sk-live-123");
        assert_eq!(key, Credential::from("sk-live-123"));
        assert_ne!(key, Credential::from("sk-live-124"));
    }
}
