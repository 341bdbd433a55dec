//! The store of pseudonym epoch keys: `<lake>/_keys/<tenant>/<epoch>.key`.
//!
//! Each epoch key is 32 random bytes, stored wrapped: XORed with a pad derived
//! from the master key (so the store alone reveals nothing), with a keyed MAC (so
//! a damaged or foreign file is refused, not used). Destroying an epoch deletes
//! its file; the pad alone cannot bring the key back. Do not enable object
//! versioning on the `_keys/` prefix: an old version would keep a destroyed key.
//!
//! The short-lived keys of dead letters that no epoch key applies to (a tenant
//! not configured, an epoch closed) live beside them, one per UTC day:
//! `<lake>/_keys/DEAD_LETTERS/<day>.key` (upper case: never a tenant id). A
//! day's key is destroyed once that day's dead letters have left the
//! dead-letter store (`dead_letters.retention_days`).
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
/// The key store's directory of dead-letter keys (not a valid tenant id).
pub const DEAD_LETTERS_DIR: &str = "DEAD_LETTERS";

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

/// Wrapping material: master (hex) || scope || 0x00 || label; wiped on drop. The
/// scope is a tenant id or [`DEAD_LETTERS_DIR`], the label an epoch or a day.
fn material(master: &MasterKey, scope: &str, label: &str) -> zeroize::Zeroizing<Vec<u8>> {
    let mut m = zeroize::Zeroizing::new(master.to_hex().as_bytes().to_vec());
    m.extend_from_slice(scope.as_bytes());
    m.push(0);
    m.extend_from_slice(label.as_bytes());
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

    fn path(scope: &str, label: &str) -> object_store::path::Path {
        object_store::path::Path::from(format!("{scope}/{label}.key"))
    }

    fn wrap(&self, scope: &str, label: &str, key: &[u8; 32]) -> String {
        let m = material(&self.master, scope, label);
        let pad = zeroize::Zeroizing::new(blake3::derive_key(WRAP_CONTEXT, &m));
        let wrapped: Vec<u8> = key.iter().zip(pad.iter()).map(|(k, p)| k ^ p).collect();
        let mac_key = blake3::derive_key(MAC_CONTEXT, &m);
        let mac = blake3::keyed_hash(&mac_key, &wrapped);
        format!("v1:{}:{}\n", hex::encode(&wrapped), &mac.to_hex()[..32])
    }

    fn unwrap(&self, scope: &str, label: &str, text: &str) -> Option<[u8; 32]> {
        let mut parts = text.trim().split(':');
        let (Some("v1"), Some(wrapped), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let wrapped = hex::decode(wrapped).ok()?;
        let m = material(&self.master, scope, label);
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

    async fn read(&self, scope: &str, label: &str) -> Result<Option<[u8; 32]>, SinkError> {
        match self.store.get(&Self::path(scope, label)).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(storage)?;
                let text = String::from_utf8_lossy(&bytes);
                self.unwrap(scope, label, &text).map(Some).ok_or_else(|| {
                    SinkError::Config(format!(
                        "the key file {KEYS_DIR}/{scope}/{label}.key is damaged or was made with another master key"
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
        self.ensure_at(tenant, &epoch.to_string()).await
    }

    /// The dead-letter key of a UTC day, created when it does not exist yet.
    ///
    /// # Errors
    /// Storage errors (transient); a damaged key file (configuration).
    pub async fn ensure_dead_letter_key(
        &self,
        day: chrono::NaiveDate,
    ) -> Result<[u8; 32], SinkError> {
        self.ensure_at(DEAD_LETTERS_DIR, &day.to_string()).await
    }

    async fn ensure_at(&self, scope: &str, label: &str) -> Result<[u8; 32], SinkError> {
        if let Some(k) = self.read(scope, label).await? {
            return Ok(k);
        }
        let key: [u8; 32] = rand::random();
        let payload = PutPayload::from(self.wrap(scope, label, &key).into_bytes());
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&Self::path(scope, label), payload, options)
            .await
        {
            Ok(_) => Ok(key),
            // Another process created it first: use theirs.
            Err(object_store::Error::AlreadyExists { .. }) => self
                .read(scope, label)
                .await?
                .ok_or_else(|| storage("key file vanished after a creation race")),
            Err(e) => Err(storage(e)),
        }
    }

    /// The epochs with a stored key, per tenant (dead-letter keys are not
    /// listed: see [`Self::dead_letter_key_days`]).
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn list(&self) -> Result<BTreeMap<String, Vec<Epoch>>, SinkError> {
        let metas: Vec<_> = self.store.list(None).try_collect().await.map_err(storage)?;
        let mut out: BTreeMap<String, Vec<Epoch>> = BTreeMap::new();
        for m in metas {
            let parts: Vec<&str> = m.location.as_ref().split('/').collect();
            if let [tenant, file] = parts.as_slice() {
                if *tenant == DEAD_LETTERS_DIR {
                    continue;
                }
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
        self.destroy_at(tenant, &epoch.to_string()).await
    }

    /// The UTC days with a stored dead-letter key, oldest first.
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn dead_letter_key_days(&self) -> Result<Vec<chrono::NaiveDate>, SinkError> {
        let prefix = object_store::path::Path::from(DEAD_LETTERS_DIR);
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(storage)?;
        let mut days: Vec<chrono::NaiveDate> = metas
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".key")?.parse().ok())
            .collect();
        days.sort();
        Ok(days)
    }

    /// Delete a day's dead-letter key. True when it existed.
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn destroy_dead_letter_key(&self, day: chrono::NaiveDate) -> Result<bool, SinkError> {
        self.destroy_at(DEAD_LETTERS_DIR, &day.to_string()).await
    }

    async fn destroy_at(&self, scope: &str, label: &str) -> Result<bool, SinkError> {
        let path = Self::path(scope, label);
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

/// The dead-letter keys a writer needs: today's and tomorrow's (UTC, by `now`),
/// created when missing, so a day's key exists before its first dead letter.
///
/// # Errors
/// Storage errors (transient); damaged key files.
pub async fn open_dead_letter_keys(
    store: &KeyStore,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<(chrono::NaiveDate, [u8; 32])>, SinkError> {
    let today = now.date_naive();
    let mut out = Vec::new();
    for day in [today, today + chrono::Days::new(1)] {
        out.push((day, store.ensure_dead_letter_key(day).await?));
    }
    Ok(out)
}

/// True when every dead letter written on UTC `day` is past a retention of
/// `retention_days` at `now` (the sweep has deleted them or will this time), so
/// the day's key may go: `now - retention_days` is at or after the day's end.
pub fn dead_letter_key_expired(
    day: chrono::NaiveDate,
    retention_days: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let day_end = (day + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc());
    day_end.is_some_and(|end| {
        meterline_operators::retain::oldest_kept_instant(now, retention_days) >= end
    })
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone, Utc};

    use super::dead_letter_key_expired;

    #[test]
    fn a_day_key_expires_when_the_days_last_dead_letter_is_past_retention() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        // Dead letters of 1 December, kept 14 days: the last (23:59:59.999) is
        // deleted once "now - 14 days" reaches 2 December 00:00, i.e. on
        // 16 December at 00:00 UTC.
        let at = |d, h, m| Utc.with_ymd_and_hms(2026, 12, d, h, m, 0).unwrap();
        assert!(!dead_letter_key_expired(day, 14, at(15, 23, 59)));
        assert!(dead_letter_key_expired(day, 14, at(16, 0, 0)));
        // Kept 0 days: gone when the day has ended.
        assert!(!dead_letter_key_expired(day, 0, at(1, 23, 59)));
        assert!(dead_letter_key_expired(day, 0, at(2, 0, 0)));
    }
}
