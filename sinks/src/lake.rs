//! The lake: a root URI (`file:///...` or `s3://bucket/prefix`) holding one Delta
//! table per directory.

use std::collections::HashMap;

use url::Url;

use crate::SinkError;

/// `[lake]` of the configuration.
#[derive(Debug, Clone)]
pub struct LakeConfig {
    /// Root of the lake: `file:///abs/path`, a plain local path, or `s3://bucket/prefix`.
    pub uri: String,
    /// Passed to the object store (for S3: `endpoint`, `region`, `allow_http`, ...).
    pub storage_options: HashMap<String, String>,
}

/// Object-store settings meterline applies to S3 lakes unless
/// `[lake.storage_options]` sets them: a hung request fails after `timeout`, and
/// the client's internal retries give up after `retry_timeout`, so that an outage
/// surfaces as a counted, logged storage error retried by meterline with backoff.
pub const S3_DEFAULTS: &[(&str, &str)] = &[
    ("connect_timeout", "5s"),
    ("timeout", "30s"),
    ("max_retries", "3"),
    ("retry_timeout", "30s"),
];

/// A resolved lake root.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
    storage_options: HashMap<String, String>,
}

impl Lake {
    /// Resolve and, for a local lake, create the root directory.
    ///
    /// # Errors
    /// [`SinkError::Config`] for an unparseable URI, an unsupported scheme, or a local
    /// directory that cannot be created.
    pub fn new(config: &LakeConfig) -> Result<Self, SinkError> {
        let root = parse_root(&config.uri)?;
        match root.scheme() {
            "file" => {
                let path = local_path(&root, &config.uri)?;
                std::fs::create_dir_all(&path).map_err(|e| {
                    SinkError::Config(format!("lake.uri: cannot create {}: {e}", path.display()))
                })?;
            }
            "s3" | "s3a" | "memory" => {}
            other => {
                return Err(SinkError::Config(format!(
                    "lake.uri scheme `{other}` is not supported (use file:// or s3://)"
                )))
            }
        }
        Self::resolved(root, &config.storage_options)
    }

    fn resolved(root: Url, options: &HashMap<String, String>) -> Result<Self, SinkError> {
        let mut storage_options = options.clone();
        if matches!(root.scheme(), "s3" | "s3a") {
            deltalake::aws::register_handlers(None);
            for key in storage_options.keys() {
                let k = key.to_ascii_lowercase();
                if k.contains("allow_unsafe_rename") || k.contains("locking_provider") {
                    return Err(SinkError::Config(format!(
                        "lake.storage_options.{key}: meterline commits with S3 conditional \
                         writes (If-None-Match), which every current S3 implementation \
                         supports; unsafe rename and lock tables are not used. Remove it."
                    )));
                }
            }
            check_transport(&storage_options)?;
            // Keep the object store's own retries short: meterline's retry loop
            // (logged, counted in metrics, aware of shutdown) handles outages.
            for (key, value) in S3_DEFAULTS {
                storage_options
                    .entry((*key).to_owned())
                    .or_insert_with(|| (*value).to_owned());
            }
        }
        Ok(Self {
            root,
            storage_options,
        })
    }

    /// Resolve a lake that must already exist (for readers: nothing is created).
    ///
    /// # Errors
    /// [`SinkError::Config`] for an unusable URI or a local directory that does not
    /// exist.
    pub fn existing(config: &LakeConfig) -> Result<Self, SinkError> {
        let root = parse_root(&config.uri)?;
        if root.scheme() == "file" {
            let path = local_path(&root, &config.uri)?;
            if !path.is_dir() {
                return Err(SinkError::Config(format!(
                    "lake {} does not exist (run `meterline demo` or `meterline run` first)",
                    path.display()
                )));
            }
        }
        Self::resolved(root, &config.storage_options)
    }

    /// The root URI.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The URI of one table under the root.
    pub fn table_url(&self, name: &str) -> Url {
        let mut url = self.root.clone();
        let path = format!("{}/{name}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }

    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.storage_options
    }
}

/// The value of the first of `keys` set in `options` (keys compared ignoring case).
fn option<'a>(options: &'a HashMap<String, String>, keys: &[&str]) -> Option<&'a str> {
    options
        .iter()
        .find(|(k, _)| keys.iter().any(|key| k.eq_ignore_ascii_case(key)))
        .map(|(_, v)| v.as_str())
}

/// Whether object store `options` allow plain HTTP (`allow_http = "true"`).
pub fn allows_http(options: &HashMap<String, String>) -> bool {
    option(options, &["allow_http", "aws_allow_http"])
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// S3 over plain HTTP: refused unless `allow_http` is set explicitly (with a
/// clear message, where the object store would fail later with a generic one),
/// and warned about once per process when it is. HTTPS is the default.
fn check_transport(options: &HashMap<String, String>) -> Result<(), SinkError> {
    let endpoint = option(
        options,
        &[
            "endpoint",
            "aws_endpoint",
            "aws_endpoint_url",
            "endpoint_url",
        ],
    );
    let allow_http = allows_http(options);
    let Some(url) = endpoint.and_then(|e| Url::parse(e).ok()) else {
        return Ok(());
    };
    if url.scheme() != "http" {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !allow_http {
        return Err(SinkError::Config(format!(
            "lake.storage_options.endpoint `{url}` is plain HTTP: the lake's objects (readings, \
             pseudonym key epochs) and the credentials' signatures would cross the network \
             unencrypted. Use an https:// endpoint, or set allow_http = \"true\" for an \
             endpoint on loopback or on a network encrypted by other means"
        )));
    }
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            endpoint = %url,
            loopback,
            "lake.storage_options.allow_http is set: S3 requests are not encrypted in transit"
        );
    });
    Ok(())
}

/// The directory of a `file://` root.
fn local_path(root: &Url, uri: &str) -> Result<std::path::PathBuf, SinkError> {
    root.to_file_path()
        .map_err(|()| SinkError::Config(format!("lake.uri `{uri}` is not a local path")))
}

/// Accepts URIs and plain local paths (relative paths resolve against the current
/// directory).
fn parse_root(uri: &str) -> Result<Url, SinkError> {
    if uri.contains("://") {
        let url = Url::parse(uri)
            .map_err(|e| SinkError::Config(format!("lake.uri `{uri}` is not a valid URI: {e}")))?;
        return Ok(url);
    }
    let path = std::path::absolute(uri)
        .map_err(|e| SinkError::Config(format!("lake.uri `{uri}`: {e}")))?;
    Url::from_directory_path(&path)
        .map_err(|()| SinkError::Config(format!("lake.uri `{uri}` is not a usable path")))
}

/// A lake in a new temporary directory, for tests: it lives as long as the
/// directory guard returned with it.
#[cfg(test)]
pub(crate) fn temporary_lake() -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let lake = Lake::new(&LakeConfig {
        uri: dir.path().to_string_lossy().into_owned(),
        storage_options: Default::default(),
    })
    .expect("a lake in a directory");
    (dir, lake)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_urls_nest_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(&LakeConfig {
            uri: dir.path().to_str().unwrap().to_owned(),
            storage_options: HashMap::new(),
        })
        .unwrap();
        let url = lake.table_url("readings");
        assert_eq!(url.scheme(), "file");
        assert!(url.path().ends_with("/readings"), "{url}");
        assert!(!url.path().contains("//"), "{url}");
    }

    #[test]
    fn unsupported_schemes_are_config_errors() {
        let err = Lake::new(&LakeConfig {
            uri: "ftp://x/y".into(),
            storage_options: HashMap::new(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("ftp"), "{err}");
    }

    /// Plain HTTP to S3 needs `allow_http` said explicitly; HTTPS needs nothing.
    #[test]
    fn s3_over_plain_http_is_refused_unless_allowed() {
        let lake = |options: &[(&str, &str)]| {
            Lake::new(&LakeConfig {
                uri: "s3://bucket/lake".into(),
                storage_options: options
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            })
        };
        for endpoint in ["http://minio.internal:9000", "http://127.0.0.1:9000"] {
            let err = lake(&[("endpoint", endpoint)]).unwrap_err().to_string();
            assert!(
                err.contains("plain HTTP") && err.contains("allow_http"),
                "{err}"
            );
            lake(&[("AWS_ENDPOINT", endpoint), ("aws_allow_http", "true")]).unwrap();
            lake(&[("endpoint", endpoint), ("allow_http", "false")]).unwrap_err();
        }
        lake(&[("endpoint", "https://s3.eu-north-1.amazonaws.com")]).unwrap();
        lake(&[]).unwrap();
    }

    #[test]
    fn s3_lakes_refuse_unsafe_rename_and_get_bounded_client_retries() {
        let mut options = HashMap::new();
        options.insert("AWS_S3_ALLOW_UNSAFE_RENAME".to_owned(), "true".to_owned());
        let config = LakeConfig {
            uri: "s3://bucket/lake".into(),
            storage_options: options,
        };
        let err = Lake::new(&config).unwrap_err();
        assert!(err.to_string().contains("If-None-Match"), "{err}");

        let mut options = HashMap::new();
        options.insert("timeout".to_owned(), "5s".to_owned());
        let lake = Lake::new(&LakeConfig {
            uri: "s3://bucket/lake".into(),
            storage_options: options,
        })
        .unwrap();
        assert_eq!(lake.storage_options()["timeout"], "5s", "user value wins");
        assert_eq!(lake.storage_options()["max_retries"], "3");
        assert_eq!(
            lake.table_url("readings").as_str(),
            "s3://bucket/lake/readings"
        );
    }
}
