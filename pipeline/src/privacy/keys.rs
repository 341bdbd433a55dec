//! The store of pseudonym epoch keys: `<lake>/_keys/<tenant>/<epoch>.key`.
//!
//! Each epoch key is 32 random bytes, stored wrapped: XORed with a pad derived
//! from the master key (so the store alone reveals nothing), with a keyed MAC (so
//! a damaged or foreign file is refused, not used). Destroying an epoch deletes
//! its file; the pad alone cannot bring the key back. Do not enable object
//! versioning on the `_keys/` prefix: an old version would keep a destroyed key.
//!
//! Keys are created with a conditional PUT: of two processes creating the same
//! epoch's key at once, one wins and both use its key.

use std::collections::BTreeMap;

use deltalake::{DeltaTable, ObjectStore};
use futures::TryStreamExt;
use meterline_operators::epoch::Epoch;
use meterline_operators::MasterKey;
use meterline_sinks::{Lake, SinkError};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

const WRAP_CONTEXT: &str = "meterline 2026-11 epoch key wrap v1";
const MAC_CONTEXT: &str = "meterline 2026-11 epoch key mac v1";
const TABLE: &str = "_keys";
/// The directory of the key store under the lake root.
pub const KEYS_DIR: &str = TABLE;

fn storage(e: impl std::fmt::Display) -> SinkError {
    SinkError::Transient {
        table: TABLE,
        error: Box::new(deltalake::DeltaTableError::Generic(e.to_string())),
    }
}

/// The epoch keys of a lake.
pub struct KeyStore {
    store: std::sync::Arc<dyn ObjectStore>,
    master: std::sync::Arc<MasterKey>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyStore(<redacted>)")
    }
}

/// Wrapping material: master (hex) || tenant || 0x00 || epoch; wiped on drop.
fn material(master: &MasterKey, tenant: &str, epoch: Epoch) -> zeroize::Zeroizing<Vec<u8>> {
    let mut m = zeroize::Zeroizing::new(master.to_hex().as_bytes().to_vec());
    m.extend_from_slice(tenant.as_bytes());
    m.push(0);
    m.extend_from_slice(epoch.to_string().as_bytes());
    m
}

impl KeyStore {
    /// # Errors
    /// The lake location is unusable.
    pub async fn open(lake: &Lake, master: std::sync::Arc<MasterKey>) -> Result<Self, SinkError> {
        let url = lake.table_url(TABLE);
        if url.scheme() == "file" {
            if let Ok(path) = url.to_file_path() {
                std::fs::create_dir_all(&path).map_err(|e| {
                    SinkError::Config(format!("cannot create {}: {e}", path.display()))
                })?;
            }
        }
        let table =
            DeltaTable::try_from_url_with_storage_options(url, lake.storage_options().clone())
                .await
                .map_err(storage)?;
        Ok(Self {
            store: table.object_store(),
            master,
        })
    }

    fn path(tenant: &str, epoch: Epoch) -> object_store::path::Path {
        object_store::path::Path::from(format!("{tenant}/{epoch}.key"))
    }

    fn wrap(&self, tenant: &str, epoch: Epoch, key: &[u8; 32]) -> String {
        let m = material(&self.master, tenant, epoch);
        let pad = zeroize::Zeroizing::new(blake3::derive_key(WRAP_CONTEXT, &m));
        let wrapped: Vec<u8> = key.iter().zip(pad.iter()).map(|(k, p)| k ^ p).collect();
        let mac_key = blake3::derive_key(MAC_CONTEXT, &m);
        let mac = blake3::keyed_hash(&mac_key, &wrapped);
        format!("v1:{}:{}\n", hex::encode(&wrapped), &mac.to_hex()[..32])
    }

    fn unwrap(&self, tenant: &str, epoch: Epoch, text: &str) -> Option<[u8; 32]> {
        let mut parts = text.trim().split(':');
        let (Some("v1"), Some(wrapped), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let wrapped = hex::decode(wrapped).ok()?;
        let m = material(&self.master, tenant, epoch);
        let mac_key = blake3::derive_key(MAC_CONTEXT, &m);
        if blake3::keyed_hash(&mac_key, &wrapped).to_hex()[..32] != *mac {
            return None;
        }
        let pad = zeroize::Zeroizing::new(blake3::derive_key(WRAP_CONTEXT, &m));
        let mut key = [0u8; 32];
        for (i, (w, p)) in wrapped.iter().zip(pad.iter()).enumerate().take(32) {
            key[i] = w ^ p;
        }
        (wrapped.len() == 32).then_some(key)
    }

    async fn read(&self, tenant: &str, epoch: Epoch) -> Result<Option<[u8; 32]>, SinkError> {
        match self.store.get(&Self::path(tenant, epoch)).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(storage)?;
                let text = String::from_utf8_lossy(&bytes);
                self.unwrap(tenant, epoch, &text).map(Some).ok_or_else(|| {
                    SinkError::Config(format!(
                        "the key file of tenant {tenant}, epoch {epoch} is damaged or was made with another master key"
                    ))
                })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage(e)),
        }
    }

    /// The key of an epoch, created when it does not exist yet.
    ///
    /// # Errors
    /// Storage errors (transient); a damaged key file (configuration).
    pub async fn ensure(&self, tenant: &str, epoch: Epoch) -> Result<[u8; 32], SinkError> {
        if let Some(k) = self.read(tenant, epoch).await? {
            return Ok(k);
        }
        let key: [u8; 32] = rand::random();
        let payload = PutPayload::from(self.wrap(tenant, epoch, &key).into_bytes());
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&Self::path(tenant, epoch), payload, options)
            .await
        {
            Ok(_) => Ok(key),
            // Another process created it first: use theirs.
            Err(object_store::Error::AlreadyExists { .. }) => self
                .read(tenant, epoch)
                .await?
                .ok_or_else(|| storage("key file vanished after a creation race")),
            Err(e) => Err(storage(e)),
        }
    }

    /// The epochs with a stored key, per tenant.
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn list(&self) -> Result<BTreeMap<String, Vec<Epoch>>, SinkError> {
        let metas: Vec<_> = self.store.list(None).try_collect().await.map_err(storage)?;
        let mut out: BTreeMap<String, Vec<Epoch>> = BTreeMap::new();
        for m in metas {
            let parts: Vec<&str> = m.location.as_ref().split('/').collect();
            if let [tenant, file] = parts.as_slice() {
                if let Some(epoch) = file.strip_suffix(".key").and_then(Epoch::parse) {
                    out.entry((*tenant).to_owned()).or_default().push(epoch);
                }
            }
        }
        for epochs in out.values_mut() {
            epochs.sort();
        }
        Ok(out)
    }

    /// Delete an epoch's key. True when it existed.
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn destroy(&self, tenant: &str, epoch: Epoch) -> Result<bool, SinkError> {
        let path = Self::path(tenant, epoch);
        match self.store.head(&path).await {
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(storage(e)),
            Ok(_) => {}
        }
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(storage(e)),
        }
    }
}

/// The keys of every open epoch of every rotating public tenant, created when
/// missing: what the pipeline loads into its pseudonymizer.
///
/// # Errors
/// Storage errors (transient); damaged key files.
pub async fn open_epoch_keys(
    store: &KeyStore,
    tenants: &meterline_operators::TenantRegistry,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<(String, Vec<(Epoch, [u8; 32])>)>, SinkError> {
    let mut out = Vec::new();
    for t in tenants.iter() {
        let rotation = t.rules.key_rotation;
        if t.deployment != meterline_operators::Deployment::Public
            || rotation == meterline_operators::epoch::Rotation::Never
        {
            continue;
        }
        let today = now.with_timezone(&t.timezone).date_naive();
        let mut keys = Vec::new();
        for epoch in Epoch::open(rotation, today, t.rules.key_grace_days) {
            keys.push((epoch, store.ensure(&t.id, epoch).await?));
        }
        out.push((t.id.clone(), keys));
    }
    Ok(out)
}
