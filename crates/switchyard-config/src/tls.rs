//! The `[tls]` table: HTTPS on the listener, optionally with client
//! certificates (mutual TLS).

use std::path::PathBuf;

use serde::Deserialize;

use crate::FieldProblem;

/// HTTPS on the listener. The certificate, key and client CA files are
/// read again when they change on disk (new connections get the new ones;
/// open connections keep theirs), so rotating a certificate needs no
/// restart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates, PEM, that client certificates must chain to. Set:
    /// clients are asked for a certificate (mutual TLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `required` (the default; a client without a valid
    /// certificate is refused at the handshake) or `optional` (a client may
    /// present none; one it presents must be valid).
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// Seconds a client gets to complete the handshake before the
    /// connection is dropped (a client that never finishes holds nothing).
    #[serde(default = "default_handshake_timeout_secs")]
    pub handshake_timeout_secs: u64,
}

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Refused at the handshake without a valid certificate.
    #[default]
    Required,
    /// A certificate is checked when presented, and may be absent.
    Optional,
}

impl TlsConfig {
    /// Whether a client without a certificate is refused.
    pub fn client_certificate_required(&self) -> bool {
        self.client_ca.is_some() && self.client_auth.unwrap_or_default() == ClientAuth::Required
    }

    pub(crate) fn validate(&self) -> Result<(), FieldProblem> {
        if self.client_auth.is_some() && self.client_ca.is_none() {
            return Err((
                "tls.client_auth".into(),
                "needs tls.client_ca (the CA client certificates are checked against)".into(),
            ));
        }
        if self.handshake_timeout_secs == 0 {
            return Err((
                "tls.handshake_timeout_secs".into(),
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

fn default_handshake_timeout_secs() -> u64 {
    10
}
