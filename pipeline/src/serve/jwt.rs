//! JSON Web Tokens: who a SQL session is.
//!
//! A client sends a JWT as its password. It is accepted only when it is signed
//! with a configured key under that key's own algorithm (an HS256 secret, or the
//! RS256/ES256 public keys of a JWKS file; the token's header never chooses the
//! algorithm family, so an RS256 public key is never used as an HMAC secret),
//! names the configured issuer and audience, has not expired (beyond the
//! leeway) by meterline's clock, and carries the claims below. Every refusal has
//! a reason (a metric label and a log field); the token itself is never logged.
//!
//! Claims: `tenant` (a configured tenant id, or `*` for a service operator),
//! `role` (`operator`, `analyst`, `subject`), `sub` (the subject id; required for
//! `subject`), optional `meters` (meters shared with the subject through an
//! access link), `exp` (required), `nbf` (optional), `iss`, `aud`.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use meterline_operators::TenantRegistry;
use serde::Deserialize;

/// What a session may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every table of its tenant (or of all tenants, with `tenant = "*"`).
    Operator,
    /// Aggregates and readings as the tenant's deployment allows.
    Analyst,
    /// One subject's own rows.
    Subject,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Analyst => "analyst",
            Role::Subject => "subject",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Role::Operator, Role::Analyst, Role::Subject]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

/// Which tenants a session reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    /// `tenant = "*"`: a service operator.
    All,
    One(String),
}

/// The verified identity of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub tenant: TenantScope,
    pub role: Role,
    /// The subject id (`sub`); always set for [`Role::Subject`].
    pub subject: Option<String>,
    /// Meters shared with the subject through an access link.
    pub shared_meters: Vec<String>,
    /// `exp` (Unix seconds): a session's queries are refused after it (plus the
    /// leeway), as every request is checked.
    pub expires_at: i64,
}

/// Why a token was refused: the `reason` label of
/// `meterline_sql_auth_failures_total` and the log's `reason` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Not three base64url parts with a JSON header and claims.
    Malformed,
    /// `alg` is `none`, unknown, or not one of the configured keys' algorithms.
    UnsupportedAlgorithm,
    /// No configured key has the token's `kid`.
    UnknownKey,
    BadSignature,
    /// `exp` is past by more than the leeway.
    Expired,
    /// `nbf` is ahead by more than the leeway.
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    /// A required claim is absent or of the wrong type.
    MissingClaim,
    /// `role` is not one of the roles, or `tenant = "*"` with a role other than
    /// `operator`.
    BadRole,
    /// `tenant` is not configured (or retired).
    UnknownTenant,
    /// No password, or not a token at all (too long, not UTF-8).
    NoToken,
    /// The connection is not encrypted.
    NotTls,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Malformed => "malformed",
            AuthFailure::UnsupportedAlgorithm => "unsupported_algorithm",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::WrongIssuer => "wrong_issuer",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::MissingClaim => "missing_claim",
            AuthFailure::BadRole => "bad_role",
            AuthFailure::UnknownTenant => "unknown_tenant",
            AuthFailure::NoToken => "no_token",
            AuthFailure::NotTls => "not_tls",
        }
    }

    /// Every reason, for pre-registering the metric's label values.
    pub const ALL: [AuthFailure; 13] = [
        AuthFailure::Malformed,
        AuthFailure::UnsupportedAlgorithm,
        AuthFailure::UnknownKey,
        AuthFailure::BadSignature,
        AuthFailure::Expired,
        AuthFailure::NotYetValid,
        AuthFailure::WrongIssuer,
        AuthFailure::WrongAudience,
        AuthFailure::MissingClaim,
        AuthFailure::BadRole,
        AuthFailure::UnknownTenant,
        AuthFailure::NoToken,
        AuthFailure::NotTls,
    ];
}

/// The longest token accepted (the Postgres password message holds at most
/// 10,000 bytes; a token near that is hostile, not a credential).
pub const MAX_TOKEN_BYTES: usize = 8192;

/// One verification key: its algorithm comes from configuration, never from a
/// token.
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Why the configured keys are unusable (exit 2 at start).
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{0}")]
    Invalid(String),
}

/// Verifies tokens against the configured keys, issuer and audience.
pub struct Verifier {
    keys: Vec<Key>,
    issuer: String,
    audience: String,
    leeway: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The claims as they come, every one optional: absent ones are refused with
/// [`AuthFailure::MissingClaim`] after the signature holds.
#[derive(Deserialize)]
struct RawClaims {
    tenant: Option<String>,
    role: Option<String>,
    sub: Option<String>,
    meters: Option<Vec<String>>,
    exp: Option<i64>,
    nbf: Option<i64>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct JwkSetFile {
    keys: Vec<serde_json::Value>,
}

impl Verifier {
    /// HS256 with a shared secret (at least 32 bytes).
    ///
    /// # Errors
    /// A secret shorter than 32 bytes.
    pub fn hs256(
        secret: &[u8],
        issuer: &str,
        audience: &str,
        leeway: Duration,
    ) -> Result<Self, KeysError> {
        if secret.len() < 32 {
            return Err(KeysError::Invalid(format!(
                "the HS256 secret has {} bytes; it needs at least 32 (generate one with `openssl rand -hex 32`)",
                secret.len()
            )));
        }
        Ok(Self {
            keys: vec![Key {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret).map_err(|e| {
                    KeysError::Invalid(format!("the HS256 secret is unusable: {e}"))
                })?,
            }],
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway,
        })
    }

    /// RS256 and ES256 public keys from a JWKS document (`{"keys": [...]}`).
    /// Every key needs `alg` (`RS256` or `ES256`); symmetric (`oct`) keys,
    /// encryption keys (`use = enc`) and other algorithms are refused, so a
    /// document can never make a public key usable as an HMAC secret.
    ///
    /// # Errors
    /// Not a JWKS document, no usable key, or a key that breaks a rule above.
    pub fn jwks(
        text: &str,
        issuer: &str,
        audience: &str,
        leeway: Duration,
    ) -> Result<Self, KeysError> {
        let set: JwkSetFile = serde_json::from_str(text)
            .map_err(|e| KeysError::Invalid(format!("not a JWKS document: {e}")))?;
        let mut keys = Vec::new();
        for (i, value) in set.keys.iter().enumerate() {
            let at = |what: &str| KeysError::Invalid(format!("key {i}: {what}"));
            let field = |name: &str| value.get(name).and_then(serde_json::Value::as_str);
            let algorithm = match (field("kty"), field("alg")) {
                (Some("RSA"), Some("RS256")) => Algorithm::RS256,
                (Some("EC"), Some("ES256")) => Algorithm::ES256,
                (_, None) => return Err(at("has no `alg` (RS256 or ES256)")),
                (kty, Some(alg)) => {
                    return Err(at(&format!(
                        "kty {} with alg {alg} is not accepted (RS256 with RSA, ES256 with EC)",
                        kty.unwrap_or("?")
                    )))
                }
            };
            if field("use").is_some_and(|u| u != "sig") {
                return Err(at("is not a signing key (`use` must be `sig`)"));
            }
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(value.clone())
                .map_err(|e| at(&format!("unreadable: {e}")))?;
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| at(&format!("unusable: {e}")))?;
            keys.push(Key {
                kid: field("kid").map(str::to_owned),
                algorithm,
                key,
            });
        }
        if keys.is_empty() {
            return Err(KeysError::Invalid("the JWKS document has no keys".into()));
        }
        Ok(Self {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway,
        })
    }

    /// The claims of `token` at `now_secs` (Unix seconds, meterline's clock),
    /// for the tenants of `tenants`.
    ///
    /// # Errors
    /// Why the token is refused.
    pub fn verify(
        &self,
        token: &str,
        now_secs: i64,
        tenants: &TenantRegistry,
    ) -> Result<Claims, AuthFailure> {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthFailure::NoToken);
        }
        let header = header(token)?;
        let algorithm = match header.alg.as_deref() {
            Some("HS256") => Algorithm::HS256,
            Some("RS256") => Algorithm::RS256,
            Some("ES256") => Algorithm::ES256,
            _ => return Err(AuthFailure::UnsupportedAlgorithm),
        };
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.algorithm == algorithm)
            .collect();
        if candidates.is_empty() {
            return Err(AuthFailure::UnsupportedAlgorithm);
        }
        let candidates: Vec<&Key> = match &header.kid {
            Some(kid) if candidates.iter().any(|k| k.kid.is_some()) => {
                let found: Vec<&Key> = candidates
                    .into_iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if found.is_empty() {
                    return Err(AuthFailure::UnknownKey);
                }
                found
            }
            _ => candidates,
        };
        let mut last = AuthFailure::BadSignature;
        for key in candidates {
            match self.decode(token, key) {
                Ok(raw) => return self.claims(raw, now_secs, tenants),
                Err(AuthFailure::BadSignature) => last = AuthFailure::BadSignature,
                Err(other) => return Err(other),
            }
        }
        Err(last)
    }

    fn decode(&self, token: &str, key: &Key) -> Result<RawClaims, AuthFailure> {
        let mut v = Validation::new(key.algorithm);
        // Expiry is checked against meterline's clock below, not the system's.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.required_spec_claims = HashSet::from(["iss".to_owned(), "aud".to_owned()]);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        jsonwebtoken::decode::<RawClaims>(token, &key.key, &v)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::InvalidSignature => AuthFailure::BadSignature,
                    K::InvalidIssuer => AuthFailure::WrongIssuer,
                    K::InvalidAudience => AuthFailure::WrongAudience,
                    K::MissingRequiredClaim(c) if c == "iss" => AuthFailure::WrongIssuer,
                    K::MissingRequiredClaim(c) if c == "aud" => AuthFailure::WrongAudience,
                    K::MissingRequiredClaim(_) | K::InvalidClaimFormat(_) => {
                        AuthFailure::MissingClaim
                    }
                    K::InvalidAlgorithm | K::UnsupportedAlgorithm | K::InvalidAlgorithmName => {
                        AuthFailure::UnsupportedAlgorithm
                    }
                    _ => AuthFailure::Malformed,
                }
            })
    }

    fn claims(
        &self,
        raw: RawClaims,
        now_secs: i64,
        tenants: &TenantRegistry,
    ) -> Result<Claims, AuthFailure> {
        let leeway = i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX);
        let exp = raw.exp.ok_or(AuthFailure::MissingClaim)?;
        if exp.saturating_add(leeway) < now_secs {
            return Err(AuthFailure::Expired);
        }
        if raw
            .nbf
            .is_some_and(|nbf| nbf.saturating_sub(leeway) > now_secs)
        {
            return Err(AuthFailure::NotYetValid);
        }
        let role = Role::parse(raw.role.as_deref().ok_or(AuthFailure::MissingClaim)?)
            .ok_or(AuthFailure::BadRole)?;
        let tenant = match raw.tenant.as_deref().ok_or(AuthFailure::MissingClaim)? {
            "*" if role == Role::Operator => TenantScope::All,
            "*" => return Err(AuthFailure::BadRole),
            t if tenants.by_id(t).is_some() => TenantScope::One(t.to_owned()),
            _ => return Err(AuthFailure::UnknownTenant),
        };
        let subject = raw.sub.filter(|s| !s.is_empty());
        if role == Role::Subject && subject.is_none() {
            return Err(AuthFailure::MissingClaim);
        }
        Ok(Claims {
            tenant,
            role,
            subject,
            shared_meters: raw.meters.unwrap_or_default(),
            expires_at: exp.saturating_add(leeway),
        })
    }
}

/// The token's header, parsed without trusting it for anything but the choice
/// of a configured key.
fn header(token: &str) -> Result<RawHeader, AuthFailure> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthFailure::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| AuthFailure::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthFailure::Malformed)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::Engine as _;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use meterline_operators::{Deployment, Rules, Tenant, TenantRegistry};
    use serde_json::{json, Value};

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    /// 2026-11-25T00:00:00Z
    const NOW: i64 = 1_795_564_800;

    fn tenants() -> TenantRegistry {
        TenantRegistry::new([Tenant {
            id: "acme".into(),
            deployment: Deployment::Private,
            timezone: chrono_tz::Europe::Oslo,
            rules: Rules::default(),
        }])
        .unwrap()
    }

    fn verifier() -> Verifier {
        Verifier::hs256(
            SECRET,
            "https://auth.example",
            "meterline",
            Duration::from_secs(60),
        )
        .unwrap()
    }

    fn claims(changes: Value) -> Value {
        let mut c = json!({
            "iss": "https://auth.example", "aud": "meterline", "exp": NOW + 3600,
            "tenant": "acme", "role": "analyst", "sub": "acct-1",
        });
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn token(changes: Value) -> String {
        encode(
            &Header::default(),
            &claims(changes),
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap()
    }

    fn verify(token: &str) -> Result<Claims, AuthFailure> {
        verifier().verify(token, NOW, &tenants())
    }

    #[test]
    fn a_good_token_gives_its_claims() {
        let c = verify(&token(
            json!({"role": "subject", "meters": ["707057500000000018"]}),
        ))
        .unwrap();
        assert_eq!(c.tenant, TenantScope::One("acme".into()));
        assert_eq!(c.role, Role::Subject);
        assert_eq!(c.subject.as_deref(), Some("acct-1"));
        assert_eq!(c.shared_meters, ["707057500000000018"]);
        let op = verify(&token(json!({"tenant": "*", "role": "operator"}))).unwrap();
        assert_eq!(op.tenant, TenantScope::All);
    }

    #[test]
    fn each_bad_token_is_refused_with_its_reason() {
        let cases = [
            (json!({"exp": NOW - 61}), AuthFailure::Expired),
            (json!({"nbf": NOW + 61}), AuthFailure::NotYetValid),
            (
                json!({"iss": "https://evil.example"}),
                AuthFailure::WrongIssuer,
            ),
            (json!({"iss": null}), AuthFailure::WrongIssuer),
            (json!({"aud": "other"}), AuthFailure::WrongAudience),
            (json!({"aud": null}), AuthFailure::WrongAudience),
            (json!({"exp": null}), AuthFailure::MissingClaim),
            (json!({"tenant": null}), AuthFailure::MissingClaim),
            (json!({"role": null}), AuthFailure::MissingClaim),
            (
                json!({"role": "subject", "sub": null}),
                AuthFailure::MissingClaim,
            ),
            (json!({"role": "admin"}), AuthFailure::BadRole),
            (
                json!({"tenant": "*", "role": "analyst"}),
                AuthFailure::BadRole,
            ),
            (json!({"tenant": "globex"}), AuthFailure::UnknownTenant),
        ];
        for (changes, want) in cases {
            assert_eq!(verify(&token(changes.clone())), Err(want), "{changes}");
        }
        // Within the leeway: still good.
        assert!(verify(&token(json!({"exp": NOW - 59}))).is_ok());
    }

    #[test]
    fn forged_and_malformed_tokens_are_refused() {
        let good = token(json!({}));
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let body = good.split('.').nth(1).unwrap();
        // alg none, with and without a signature.
        let none = format!("{}.{body}.", b64(json!({"alg": "none", "typ": "JWT"})));
        assert_eq!(verify(&none), Err(AuthFailure::UnsupportedAlgorithm));
        // Signed with another secret.
        let other = encode(
            &Header::default(),
            &claims(json!({})),
            &EncodingKey::from_secret(b"another secret of thirty-two bytes!!").unwrap(),
        )
        .unwrap();
        assert_eq!(verify(&other), Err(AuthFailure::BadSignature));
        // Claims changed after signing.
        let parts: Vec<&str> = good.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(claims(json!({"tenant": "acme", "role": "operator"}))),
            parts[2]
        );
        assert_eq!(verify(&tampered), Err(AuthFailure::BadSignature));
        for bad in ["", "abc", "a.b", "a.b.c.d", "!!.e30.x"] {
            assert!(
                matches!(
                    verify(bad),
                    Err(AuthFailure::Malformed | AuthFailure::NoToken)
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            verify(&"a".repeat(MAX_TOKEN_BYTES + 1)),
            Err(AuthFailure::NoToken)
        );
    }

    #[test]
    fn an_hs256_token_is_refused_by_a_jwks_verifier_whatever_its_secret() {
        // An EC public key (P-256) in a JWKS: an attacker who signs HS256 with
        // the key's public bytes as the secret must get nowhere.
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "k1",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        }]});
        let v = Verifier::jwks(
            &jwks.to_string(),
            "https://auth.example",
            "meterline",
            Duration::from_secs(60),
        )
        .unwrap();
        let hs = token(json!({}));
        assert_eq!(
            v.verify(&hs, NOW, &tenants()),
            Err(AuthFailure::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn a_jwks_with_a_symmetric_or_unlabelled_key_is_refused() {
        for key in [
            json!({"kty": "oct", "alg": "HS256", "k": "c2VjcmV0"}),
            json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
            json!({"kty": "RSA", "alg": "RS256", "use": "enc", "n": "AQAB", "e": "AQAB"}),
        ] {
            let text = json!({"keys": [key]}).to_string();
            assert!(
                Verifier::jwks(&text, "i", "a", Duration::ZERO).is_err(),
                "{text}"
            );
        }
        assert!(Verifier::hs256(b"short", "i", "a", Duration::ZERO).is_err());
    }
}
