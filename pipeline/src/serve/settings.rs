//! `[serve]` validated: the listener, TLS, the token verifier and the limits.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pgwire::tokio::tokio_rustls::rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::jwt::Verifier;
use crate::config::{check_owner_only, invalid, ConfigError, ServeConfig};

/// The limits every session runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub statement_timeout: Duration,
    pub max_result_rows: usize,
    pub memory_limit_bytes: usize,
    pub refresh: Duration,
}

/// Everything `meterline serve` needs from `[serve]`.
pub struct ServeSettings {
    pub listen: SocketAddr,
    /// `None`: plaintext, only ever on loopback.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub verifier: Verifier,
    pub limits: Limits,
}

impl std::fmt::Debug for ServeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeSettings")
            .field("listen", &self.listen)
            .field("tls", &self.tls.is_some())
            .field("verifier", &self.verifier)
            .field("limits", &self.limits)
            .finish()
    }
}

impl ServeSettings {
    /// Validate `[serve]`, reading the TLS files and the token keys.
    ///
    /// # Errors
    /// Any unusable value, naming its field: a listen address off loopback
    /// without TLS, unreadable or group-readable secret files, no key or both
    /// kinds of key, an empty issuer or audience, zero limits.
    pub fn from_config(c: &ServeConfig) -> Result<Self, ConfigError> {
        let listen: SocketAddr = c.listen.parse().map_err(|e| {
            invalid(
                "serve.listen",
                format!("`{}` is not an address:port ({e})", c.listen),
            )
        })?;
        let tls = match (&c.tls_cert_file, &c.tls_key_file) {
            (Some(cert), Some(key)) => Some(Arc::new(tls_config(cert, key)?)),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "serve.tls_cert_file",
                    "set both tls_cert_file and tls_key_file, or neither",
                ))
            }
        };
        if tls.is_none() && !listen.ip().is_loopback() {
            return Err(invalid(
                "serve.listen",
                format!(
                    "{listen} is not a loopback address and TLS is off: tokens would cross the \
                     network in clear text; set serve.tls_cert_file and serve.tls_key_file"
                ),
            ));
        }
        let positive = |field: &str, v: u64| {
            if v == 0 {
                Err(invalid(field, "must be greater than 0"))
            } else {
                Ok(v)
            }
        };
        let limits = Limits {
            max_connections: positive("serve.max_connections", c.max_connections as u64)? as usize,
            statement_timeout: Duration::from_secs(positive(
                "serve.statement_timeout_secs",
                c.statement_timeout_secs,
            )?),
            max_result_rows: positive("serve.max_result_rows", c.max_result_rows as u64)? as usize,
            memory_limit_bytes: (positive("serve.memory_limit_mib", c.memory_limit_mib as u64)?
                as usize)
                .saturating_mul(1024 * 1024),
            refresh: Duration::from_secs(positive("serve.refresh_secs", c.refresh_secs)?),
        };
        Ok(Self {
            listen,
            tls,
            verifier: verifier(c)?,
            limits,
        })
    }
}

fn verifier(c: &ServeConfig) -> Result<Verifier, ConfigError> {
    let j = &c.jwt;
    if j.issuer.trim().is_empty() {
        return Err(invalid(
            "serve.jwt.issuer",
            "is required: the `iss` every accepted token carries",
        ));
    }
    if j.audience.trim().is_empty() {
        return Err(invalid("serve.jwt.audience", "must not be empty"));
    }
    let leeway = Duration::from_secs(j.leeway_secs);
    match (&j.hs256_secret_file, &j.jwks_file) {
        (Some(path), None) => {
            check_owner_only("serve.jwt.hs256_secret_file", path, "the HS256 secret")?;
            let secret = std::fs::read(path).map_err(|e| {
                invalid(
                    "serve.jwt.hs256_secret_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let secret = trim_newline(&secret);
            Verifier::hs256(secret, &j.issuer, &j.audience, leeway)
                .map_err(|e| invalid("serve.jwt.hs256_secret_file", e.to_string()))
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "serve.jwt.jwks_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            Verifier::jwks(&text, &j.issuer, &j.audience, leeway)
                .map_err(|e| invalid("serve.jwt.jwks_file", e.to_string()))
        }
        (None, None) => Err(invalid(
            "serve.jwt",
            "set hs256_secret_file or jwks_file: without a key no token can be verified",
        )),
        (Some(_), Some(_)) => Err(invalid(
            "serve.jwt",
            "set hs256_secret_file or jwks_file, not both",
        )),
    }
}

/// The secret as written by `openssl rand -hex 32 > file`: without the final
/// newline.
pub fn trim_newline(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &bytes[..end]
}

fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| {
            invalid(
                "serve.tls_cert_file",
                format!("cannot read {}: {e}", cert.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(invalid(
            "serve.tls_cert_file",
            format!("{} holds no PEM certificate", cert.display()),
        ));
    }
    check_owner_only("serve.tls_key_file", key, "the TLS private key")?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        invalid(
            "serve.tls_key_file",
            format!("no usable PEM private key in {}: {e}", key.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("serve.tls_cert_file", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            invalid(
                "serve.tls_key_file",
                format!("the key does not fit the certificate: {e}"),
            )
        })?;
    // Postgres 17 clients may negotiate TLS directly and then require this ALPN.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}
