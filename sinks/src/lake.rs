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
            "s3" | "s3a" => deltalake::aws::register_handlers(None),
            "memory" => {}
            other => {
                return Err(SinkError::Config(format!(
                    "lake.uri scheme `{other}` is not supported (use file:// or s3://)"
                )))
            }
        }
        Ok(Self {
            root,
            storage_options: config.storage_options.clone(),
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
        Ok(Self {
            root,
            storage_options: config.storage_options.clone(),
        })
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
}
