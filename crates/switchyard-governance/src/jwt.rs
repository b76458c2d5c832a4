//! Bearer JWTs from an OpenID Connect issuer: signatures checked against
//! the issuer's JWKS (fetched over HTTPS, cached, re-read when a token
//! names a key id not seen before), issuer, audience and expiry checked,
//! and claims mapped to a tenant, team and role.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::RwLock;
use tracing::{info, warn};

use crate::GovernanceError;

/// How an issuer's tokens are checked and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// Where the issuer publishes its signing keys.
    pub jwks_url: String,
    /// The `aud` every token must carry, when set.
    pub audience: Option<String>,
    /// The claim holding the tenant id.
    pub tenant_claim: String,
    /// The claim holding the team id, if teams are used.
    pub team_claim: Option<String>,
    /// The claim holding the role (`admin`, `member`, `read_only`);
    /// tokens without it are members.
    pub role_claim: String,
}

/// The identity a valid token asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    /// `sub`.
    pub subject: String,
    /// The tenant claim.
    pub tenant: String,
    /// The team claim.
    pub team: Option<String>,
    /// The role claim, if present.
    pub role: Option<String>,
    /// When the token stops being valid (Unix seconds).
    pub expires_at: u64,
}

/// Keys are re-read at most this often when an unknown key id shows up,
/// so tokens with made-up key ids cannot make the gateway hammer the
/// issuer.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(10);

struct Keys {
    set: JwkSet,
    fetched: Option<Instant>,
}

/// Checks tokens of one issuer.
pub struct JwtVerifier {
    settings: JwtSettings,
    http: reqwest::Client,
    keys: RwLock<Keys>,
}

/// Whether `token` is shaped like a JWT (three base64url parts, a JSON
/// header), as opposed to a Switchyard key.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|&b| b == b'.').count() == 2
}

impl JwtVerifier {
    /// A verifier for `settings`; keys are fetched on first use.
    pub fn new(settings: JwtSettings) -> Result<Arc<Self>, GovernanceError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| GovernanceError::Unavailable(format!("cannot build HTTP client: {e}")))?;
        Ok(Arc::new(Self {
            settings,
            http,
            keys: RwLock::new(Keys {
                set: JwkSet { keys: Vec::new() },
                fetched: None,
            }),
        }))
    }

    async fn refresh(&self) -> Result<(), GovernanceError> {
        let mut keys = self.keys.write().await;
        if keys
            .fetched
            .is_some_and(|at| at.elapsed() < REFRESH_AT_MOST_EVERY)
        {
            return Ok(());
        }
        let fetched = async {
            self.http
                .get(&self.settings.jwks_url)
                .send()
                .await?
                .error_for_status()?
                .json::<JwkSet>()
                .await
        }
        .await;
        keys.fetched = Some(Instant::now());
        match fetched {
            Ok(set) => {
                info!(keys = set.keys.len(), url = %self.settings.jwks_url, "JWKS read");
                keys.set = set;
                Ok(())
            }
            Err(error) => {
                warn!(%error, url = %self.settings.jwks_url, "cannot read the JWKS");
                Err(GovernanceError::Unavailable(
                    "the token issuer's keys cannot be read".to_owned(),
                ))
            }
        }
    }

    /// The key `kid` names, reading the JWKS again if it is new.
    async fn key(
        &self,
        kid: Option<&str>,
    ) -> Result<(DecodingKey, Vec<Algorithm>), GovernanceError> {
        for attempt in 0..2 {
            {
                let keys = self.keys.read().await;
                let found = match kid {
                    Some(kid) => keys.set.find(kid),
                    // Without a kid, only an unambiguous set will do.
                    None if keys.set.keys.len() == 1 => keys.set.keys.first(),
                    None => None,
                };
                if let Some(jwk) = found {
                    let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                        GovernanceError::Unauthenticated(format!("unusable signing key: {e}"))
                    })?;
                    return Ok((key, algorithms(&jwk.algorithm)));
                }
            }
            if attempt == 0 {
                self.refresh().await?;
            }
        }
        Err(GovernanceError::Unauthenticated(
            "the token's signing key is not the issuer's".to_owned(),
        ))
    }

    /// Checks `token` and reads the identity it asserts.
    pub async fn verify(&self, token: &str) -> Result<TokenIdentity, GovernanceError> {
        let invalid =
            |why: String| GovernanceError::Unauthenticated(format!("invalid token: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
        let (key, allowed) = self.key(header.kid.as_deref()).await?;
        // The algorithm comes from the key, never from the token alone:
        // a token may not pick HMAC with the public key as the secret.
        if !allowed.contains(&header.alg) {
            return Err(invalid(format!(
                "algorithm {:?} does not match the key",
                header.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = allowed;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        match &self.settings.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| invalid(e.to_string()))?;
        let claims = data.claims;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let tenant = text(&self.settings.tenant_claim).ok_or_else(|| {
            invalid(format!(
                "no `{}` claim naming a tenant",
                self.settings.tenant_claim
            ))
        })?;
        Ok(TokenIdentity {
            subject: text("sub").unwrap_or_default(),
            tenant,
            team: self.settings.team_claim.as_deref().and_then(text),
            role: text(&self.settings.role_claim),
            expires_at: claims.get("exp").and_then(Value::as_u64).unwrap_or(0),
        })
    }
}

/// The algorithms a key may verify.
fn algorithms(parameters: &AlgorithmParameters) -> Vec<Algorithm> {
    match parameters {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256, Algorithm::ES384],
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        // Shared secrets in a public key set would let anyone sign; key
        // types added later are refused until known.
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwts_and_keys_are_told_apart() {
        assert!(looks_like_jwt("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!looks_like_jwt("sy-key_0123456789abcdef.secret"));
        assert!(!looks_like_jwt("eyJonly.one"));
    }
}
