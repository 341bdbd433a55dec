//! Keyed pseudonyms (blake3 keyed mode).
//!
//! A pseudonym is the first 16 bytes (32 hex characters) of
//! `blake3::keyed_hash(k, identifier)`, where `k` is derived from the master key per
//! tenant and identifier kind with `blake3::derive_key`. Properties:
//! - deterministic for one (master key, tenant, kind, identifier): joins keep working;
//! - different tenants, kinds or master keys give unrelated pseudonyms;
//! - without the master key, a pseudonym cannot be reversed by enumerating the
//!   10^7 Norwegian GSRNs (an unkeyed hash could).
//!
//! The master key never leaves this type: it is read once, shared behind an `Arc`
//! (the type is not `Clone`, so its bytes are never copied), wiped when dropped,
//! and `Debug` prints a redaction. Keys derived from it are wiped when the value
//! holding them is dropped.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use zeroize::{Zeroize, Zeroizing};

use crate::epoch::Epoch;

/// Context string for `blake3::derive_key`: fixed, application-specific, versioned.
const KDF_CONTEXT: &str = "meterline 2026-11 pseudonym key v1";
/// Context for identifier keys derived from an epoch key.
const EPOCH_KDF_CONTEXT: &str = "meterline 2026-11 epoch pseudonym key v1";
/// Context for identifier keys derived from a dead-letter key.
const DEAD_LETTER_KDF_CONTEXT: &str = "meterline 2026-12 dead-letter pseudonym key v1";
/// Context for the key of ledger hashes (see [`LedgerHasher`]).
const LEDGER_CONTEXT: &str = "meterline 2026-11 erasure audit subject v1";
/// Context for the key of replay tags (see [`Pseudonymizer::replay_tag`]).
const REPLAY_CONTEXT: &str = "meterline 2026-11 replay tag v1";

/// The kinds of identifier that are pseudonymized, each under its own derived key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    Device,
    Meter,
    Subject,
}

impl IdKind {
    fn label(self) -> &'static str {
        match self {
            IdKind::Device => "device",
            IdKind::Meter => "meter",
            IdKind::Subject => "subject",
        }
    }
}

/// The 32-byte master key. Loaded from a file or the environment, never from config.
/// Not `Clone`: share it as `Arc<MasterKey>`. Its bytes are wiped on drop.
pub struct MasterKey([u8; 32]);

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Why a key could not be read. Messages never include key material.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KeyError {
    #[error("pseudonym key must be 64 hexadecimal characters (32 bytes); got {0} characters")]
    Length(usize),
    #[error("pseudonym key must be hexadecimal (0-9, a-f)")]
    NotHex,
}

impl MasterKey {
    /// The key of these bytes (the caller's array is wiped).
    pub fn from_bytes(mut bytes: [u8; 32]) -> Self {
        let key = MasterKey(bytes);
        bytes.zeroize();
        key
    }

    /// Parse 64 hex characters (surrounding whitespace ignored).
    ///
    /// # Errors
    /// Wrong length or non-hex characters; the message does not echo the input.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(KeyError::Length(text.chars().count()));
        }
        let mut key = MasterKey([0u8; 32]);
        hex::decode_to_slice(text, &mut key.0).map_err(|_| KeyError::NotHex)?;
        Ok(key)
    }

    /// The key as 64 hex characters (for `meterline keygen`, the demo's key file
    /// and derivations made from the hex form), wiped when dropped.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Tenants whose derived keys a [`Pseudonymizer`] caches. The tenant of a dead
/// letter is message content (any well-formed id, configured or not, is
/// pseudonymized under its own key), so the cache is cleared when full; deriving a
/// key again costs one hash.
pub const MAX_CACHED_TENANT_KEYS: usize = 1024;

/// Derives and caches per-(tenant, kind) keys; computes pseudonyms.
#[derive(Clone)]
pub struct Pseudonymizer {
    master: Arc<MasterKey>,
    /// tenant -> derived key per [`IdKind`] (looked up without allocating); at most
    /// [`MAX_CACHED_TENANT_KEYS`] tenants.
    keys: HashMap<String, [Option<[u8; 32]>; 3]>,
    /// (tenant, epoch) -> the epoch's key (random, stored wrapped; see `epoch`).
    /// Set only by [`Self::set_epoch_keys`] from the key store, never from message
    /// content: bounded by the configured tenants and their open epochs.
    epoch_keys: HashMap<(String, Epoch), [u8; 32]>,
    /// (tenant, epoch) -> derived key per [`IdKind`]; only for entries of
    /// `epoch_keys` (see [`Self::epoch_key`]), so bounded like it.
    epoch_derived: HashMap<(String, Epoch), [Option<[u8; 32]>; 3]>,
    /// UTC day -> the short-lived key of the dead letters written that day (see
    /// [`Self::dead_letter_key`]). Set only from the key store: a few days.
    dead_letter_keys: HashMap<chrono::NaiveDate, [u8; 32]>,
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonymizer")
            .field("derived_keys", &self.keys.len())
            .field("epoch_keys", &self.epoch_keys.len())
            .field("dead_letter_keys", &self.dead_letter_keys.len())
            .finish_non_exhaustive()
    }
}

/// Wipes one slot array of derived keys (one per [`IdKind`]).
fn wipe(keys: &mut [Option<[u8; 32]>; 3]) {
    keys.iter_mut().flatten().for_each(Zeroize::zeroize);
}

impl Drop for Pseudonymizer {
    /// Wipes the derived keys (the master key wipes itself with its last `Arc`).
    fn drop(&mut self) {
        self.keys
            .values_mut()
            .chain(self.epoch_derived.values_mut())
            .for_each(wipe);
        for key in self
            .epoch_keys
            .values_mut()
            .chain(self.dead_letter_keys.values_mut())
        {
            key.zeroize();
        }
    }
}

impl Pseudonymizer {
    /// A pseudonymizer under `master` (a key, or a shared `Arc` of one).
    pub fn new(master: impl Into<Arc<MasterKey>>) -> Self {
        Self {
            master: master.into(),
            keys: HashMap::new(),
            epoch_keys: HashMap::new(),
            epoch_derived: HashMap::new(),
            dead_letter_keys: HashMap::new(),
        }
    }

    /// The short-lived dead-letter keys, by the UTC day whose dead letters they
    /// pseudonymize (replacing what was set before).
    pub fn set_dead_letter_keys(&mut self, keys: &[(chrono::NaiveDate, [u8; 32])]) {
        for key in self.dead_letter_keys.values_mut() {
            key.zeroize();
        }
        self.dead_letter_keys = keys.iter().copied().collect();
    }

    /// The key for identifiers of kind `kind` in the dead letters of `scope` (a
    /// tenant id, or `-`) written on UTC `day`: derived from that day's
    /// short-lived key, which is destroyed when the day's dead letters have left
    /// the dead-letter store. `None` when that key is not loaded. Used where no
    /// epoch key applies (a tenant not configured, an epoch closed): never the
    /// master key, whose pseudonyms would link forever.
    pub fn dead_letter_key(
        &self,
        scope: &str,
        kind: IdKind,
        day: chrono::NaiveDate,
    ) -> Option<[u8; 32]> {
        let day_key = self.dead_letter_keys.get(&day)?;
        let mut material = Zeroizing::new(Vec::with_capacity(32 + scope.len() + 1 + 8));
        material.extend_from_slice(day_key);
        material.extend_from_slice(scope.as_bytes());
        material.push(0);
        material.extend_from_slice(kind.label().as_bytes());
        Some(blake3::derive_key(DEAD_LETTER_KDF_CONTEXT, &material))
    }

    /// The keys of `tenant`'s open epochs (replacing what was set before: an epoch
    /// left out is closed, and its readings are not pseudonymized any more).
    pub fn set_epoch_keys(&mut self, tenant: &str, keys: &[(Epoch, [u8; 32])]) {
        self.epoch_keys.retain(|(t, _), key| {
            let keep = t != tenant;
            if !keep {
                key.zeroize();
            }
            keep
        });
        self.epoch_derived.retain(|(t, _), keys| {
            let keep = t != tenant;
            if !keep {
                wipe(keys);
            }
            keep
        });
        for (epoch, key) in keys {
            self.epoch_keys.insert((tenant.to_owned(), *epoch), *key);
        }
    }

    /// True when identifiers of `tenant` in `epoch` can be pseudonymized.
    pub fn has_epoch(&self, tenant: &str, epoch: Epoch) -> bool {
        epoch == Epoch::All || self.epoch_keys.contains_key(&(tenant.to_owned(), epoch))
    }

    /// The key for one tenant, identifier kind and epoch (`None`: the epoch is
    /// closed or unknown). [`Epoch::All`] is the master-derived [`key`](Self::key).
    pub fn epoch_key(&mut self, tenant: &str, kind: IdKind, epoch: Epoch) -> Option<[u8; 32]> {
        if epoch == Epoch::All {
            return Some(self.key(tenant, kind));
        }
        let slot = kind as usize;
        let id = (tenant.to_owned(), epoch);
        if let Some(key) = self.epoch_derived.get(&id).and_then(|k| k[slot]) {
            return Some(key);
        }
        let epoch_key = self.epoch_keys.get(&id)?;
        let mut material = Zeroizing::new(Vec::with_capacity(32 + tenant.len() + 1 + 8));
        material.extend_from_slice(epoch_key);
        material.extend_from_slice(tenant.as_bytes());
        material.push(0);
        material.extend_from_slice(kind.label().as_bytes());
        let key = blake3::derive_key(EPOCH_KDF_CONTEXT, &material);
        self.epoch_derived.entry(id).or_default()[slot] = Some(key);
        Some(key)
    }

    /// The derived key for one tenant and identifier kind.
    pub fn key(&mut self, tenant: &str, kind: IdKind) -> [u8; 32] {
        let slot = kind as usize;
        if let Some(key) = self.keys.get(tenant).and_then(|k| k[slot]) {
            return key;
        }
        // Key material: master || tenant || 0x00 || kind. Tenant ids cannot contain
        // 0x00, so distinct (tenant, kind) pairs never share material.
        let mut material = Zeroizing::new(Vec::with_capacity(32 + tenant.len() + 1 + 8));
        material.extend_from_slice(&self.master.0);
        material.extend_from_slice(tenant.as_bytes());
        material.push(0);
        material.extend_from_slice(kind.label().as_bytes());
        let key = blake3::derive_key(KDF_CONTEXT, &material);
        if self.keys.len() >= MAX_CACHED_TENANT_KEYS && !self.keys.contains_key(tenant) {
            self.keys.values_mut().for_each(wipe);
            self.keys.clear();
        }
        self.keys.entry(tenant.to_owned()).or_default()[slot] = Some(key);
        key
    }

    /// Tenants whose derived keys are cached now (never more than
    /// [`MAX_CACHED_TENANT_KEYS`]).
    pub fn cached_tenant_keys(&self) -> usize {
        self.keys.len()
    }

    /// The tag `meterline dlq replay` puts in the `meterline-replay` header: a keyed
    /// hash of the payload (64 hex characters) proving that meterline itself redacted
    /// it, so its identifiers are pseudonyms already and are not hashed again.
    pub fn replay_tag(&self, payload: &[u8]) -> String {
        let key = Zeroizing::new(blake3::derive_key(REPLAY_CONTEXT, &self.master.0));
        blake3::keyed_hash(&key, payload).to_hex().to_string()
    }

    /// The pseudonym of `id`, 32 lowercase hex characters.
    pub fn pseudonym(&mut self, tenant: &str, kind: IdKind, id: &str) -> String {
        let key = self.key(tenant, kind);
        pseudonym_with_key(&key, id)
    }
}

/// The keyed hash under which the consent ledger and the erasure audit name a
/// subject or a meter (32 hex characters), the same in every tenant: whoever holds
/// the master key and an id can find its entries; the tables alone name nobody.
#[derive(Clone)]
pub struct LedgerHasher {
    key: [u8; 32],
}

impl fmt::Debug for LedgerHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LedgerHasher(<redacted>)")
    }
}

impl Drop for LedgerHasher {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl LedgerHasher {
    pub fn new(master: &MasterKey) -> Self {
        // Derived from the hex form: the audit hashes written since 2026-11 use it.
        Self {
            key: blake3::derive_key(LEDGER_CONTEXT, master.to_hex().as_bytes()),
        }
    }

    pub fn hash(&self, id: &str) -> String {
        blake3::keyed_hash(&self.key, id.as_bytes()).to_hex()[..32].to_owned()
    }
}

/// The pseudonym of `id` under an already derived key.
pub fn pseudonym_with_key(key: &[u8; 32], id: &str) -> String {
    let hash = blake3::keyed_hash(key, id.as_bytes());
    let mut out = [0u8; 32];
    // 16 bytes -> 32 hex characters; infallible for a 32-byte buffer.
    hex::encode_to_slice(&hash.as_bytes()[..16], &mut out).expect("32-byte buffer");
    // Hex is ASCII.
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(byte: u8) -> Arc<MasterKey> {
        Arc::new(MasterKey::from_bytes([byte; 32]))
    }

    #[test]
    fn pseudonym_is_32_hex_and_not_the_input() {
        let mut p = Pseudonymizer::new(key(7));
        let id = "707057500000000018";
        let pseudo = p.pseudonym("oslo", IdKind::Meter, id);
        assert_eq!(pseudo.len(), 32);
        assert!(pseudo.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!pseudo.contains(id));
    }

    #[test]
    fn key_parsing_never_echoes_input() {
        let err = MasterKey::from_hex("secretsecret").unwrap_err();
        assert!(!err.to_string().contains("secret"));
        let err = MasterKey::from_hex(&"z".repeat(64)).unwrap_err();
        assert_eq!(err, KeyError::NotHex);
        assert!(MasterKey::from_hex(&"ab".repeat(32)).is_ok());
        assert_eq!(format!("{:?}", key(1)), "MasterKey(<redacted>)");
    }

    /// `Debug` of a pseudonymizer that holds derived keys shows none of them, nor
    /// the master key, as hex or as bytes.
    #[test]
    fn debug_output_shows_no_key_material() {
        let mut p = Pseudonymizer::new(key(0x9e));
        p.set_epoch_keys("oslo", &[(Epoch::Year(2026), [0x7d; 32])]);
        let epoch_derived = p
            .epoch_key("oslo", IdKind::Device, Epoch::Year(2026))
            .unwrap();
        p.pseudonym("oslo", IdKind::Meter, "707057500000000018");
        let derived = p.key("oslo", IdKind::Meter);
        let ledger = LedgerHasher::new(&MasterKey::from_bytes([0x9e; 32]));
        for text in [
            format!("{p:?}"),
            format!("{p:#?}"),
            format!("{ledger:?}"),
            format!("{:?}", key(0x9e)),
        ] {
            for secret in [[0x9e; 32], [0x7d; 32], derived, epoch_derived] {
                assert!(!text.contains(&hex::encode(&secret[..4])), "{text}");
                assert!(
                    !text.contains(&format!("{}, {}", secret[0], secret[1])),
                    "{text}"
                );
                assert!(!text.contains(&format!("{},\n", secret[0])), "{text}");
            }
        }
    }

    /// Dead letters are pseudonymized under their (unconfigured) tenant's key: a
    /// stream of made-up tenants leaves the key cache within its bound, and the
    /// pseudonyms do not change when it is cleared.
    #[test]
    fn the_key_cache_stays_bounded_under_made_up_tenants() {
        let mut p = Pseudonymizer::new(key(3));
        let before = p.pseudonym("oslo", IdKind::Device, "dev-1");
        for i in 0..3 * MAX_CACHED_TENANT_KEYS {
            p.pseudonym(&format!("tenant-{i}"), IdKind::Meter, "m");
            assert!(p.cached_tenant_keys() <= MAX_CACHED_TENANT_KEYS);
        }
        assert_eq!(p.pseudonym("oslo", IdKind::Device, "dev-1"), before);
    }

    proptest! {
        #[test]
        fn deterministic_per_key_and_distinct_across_keys(id in "[a-z0-9-]{1,40}", a in 0u8..255) {
            let b = a.wrapping_add(1);
            let mut pa = Pseudonymizer::new(key(a));
            let mut pa2 = Pseudonymizer::new(key(a));
            let mut pb = Pseudonymizer::new(key(b));
            let x = pa.pseudonym("t", IdKind::Device, &id);
            prop_assert_eq!(&x, &pa2.pseudonym("t", IdKind::Device, &id));
            prop_assert_ne!(&x, &pb.pseudonym("t", IdKind::Device, &id));
            prop_assert_ne!(&x, &pa.pseudonym("u", IdKind::Device, &id));
            prop_assert_ne!(&x, &pa.pseudonym("t", IdKind::Meter, &id));
        }
    }
}
