//! `meterline token`: an HS256 token for development and tests, signed with
//! the server's own `serve.jwt.hs256_secret_file`. Production tokens come
//! from the identity provider that owns the users (its keys in `jwks_file`).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::jwt::Role;
use crate::config::{invalid, ConfigError, ServeConfig};

/// What the token says.
#[derive(Debug, Clone)]
pub struct Request {
    /// A tenant id, or `*` (operators only).
    pub tenant: String,
    pub role: Role,
    pub subject: Option<String>,
    pub meters: Vec<String>,
    /// Lifetime in seconds from `now`.
    pub ttl_secs: i64,
}

#[derive(Serialize)]
struct Body<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    tenant: &'a str,
    role: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    meters: &'a [String],
}

/// A signed token for `request` at `now` (Unix seconds).
///
/// # Errors
/// No HS256 secret configured (a JWKS server cannot sign), an unreadable or
/// short secret, a subject token without a subject.
pub fn mint(serve: &ServeConfig, request: &Request, now: i64) -> Result<String, ConfigError> {
    let Some(path) = &serve.jwt.hs256_secret_file else {
        return Err(invalid(
            "serve.jwt.hs256_secret_file",
            "meterline token signs with the HS256 secret; this configuration has none \
             (with jwks_file, tokens come from your identity provider)",
        ));
    };
    if request.role == Role::Subject && request.subject.is_none() {
        return Err(invalid("--subject", "a subject token needs --subject"));
    }
    crate::config::check_owner_only("serve.jwt.hs256_secret_file", path, "the HS256 secret")?;
    let secret = std::fs::read(path).map_err(|e| {
        invalid(
            "serve.jwt.hs256_secret_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let secret = super::settings::trim_newline(&secret);
    if secret.len() < 32 {
        return Err(invalid(
            "serve.jwt.hs256_secret_file",
            "the secret needs at least 32 bytes",
        ));
    }
    let body = Body {
        iss: &serve.jwt.issuer,
        aud: &serve.jwt.audience,
        iat: now,
        exp: now.saturating_add(request.ttl_secs),
        tenant: &request.tenant,
        role: request.role.as_str(),
        sub: request.subject.as_deref(),
        meters: &request.meters,
    };
    let key = EncodingKey::from_secret(secret)
        .map_err(|e| invalid("serve.jwt.hs256_secret_file", e.to_string()))?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &body, &key)
        .map_err(|e| invalid("serve.jwt.hs256_secret_file", e.to_string()))
}
