//! Tenants: who owns a reading, how private their deployment is, and their calendar.

use std::collections::HashMap;
use std::sync::Arc;

use chrono_tz::Tz;

/// How a tenant's data is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// A utility's public deployment: no link to identifiable people is stored.
    /// Personal fields are dropped, identifiers replaced by keyed pseudonyms.
    Public,
    /// A commercial customer's private deployment: identifiers are kept.
    Private,
}

impl Deployment {
    pub fn as_str(self) -> &'static str {
        match self {
            Deployment::Public => "public",
            Deployment::Private => "private",
        }
    }
}

/// One configured tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: String,
    pub deployment: Deployment,
    /// The tenant's calendar: local dates, days of 23/24/25 hours.
    pub timezone: Tz,
    /// Validation thresholds.
    pub rules: Rules,
}

/// A tenant's validation thresholds (`[tenants.validation]`). Values are in
/// thousandths (the stored decimal scale) and microseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Allowed GSRN prefixes (e.g. `707057500` for Norwegian metering points);
    /// empty allows any GS1 prefix. The check digit is always verified.
    pub gsrn_prefixes: Vec<String>,
    /// Physical maximum of one hour's energy, in thousandths of kWh (scaled down
    /// for PT15M). Default 25 kWh: a 3x63 A fuse at 230 V.
    pub max_kwh_per_hour: i128,
    /// Physical maximum of one hour's volume, in thousandths of m3.
    pub max_m3_per_hour: i128,
    /// Spike flag: highest interval of a meter's day above this many thousandths
    /// times its third-highest.
    pub spike_factor: i128,
    /// Readings whose interval ends later than now + this are `future_interval`.
    pub future_skew_micros: i64,
    /// Readings whose interval starts before now - this are `too_old`.
    pub max_age_micros: i64,
    /// Accept `Wh` and convert it to `kWh` (flag `unit_converted`); otherwise `Wh` is
    /// `unit_not_allowed`.
    pub convert_wh: bool,
    /// Readings are Elhub data: stored only for a meter with valid Elhub consent
    /// at the interval's start (see [`crate::consent`]).
    pub requires_elhub_consent: bool,
    /// Public tenants: how often the pseudonym key changes (see [`crate::epoch`]).
    pub key_rotation: crate::epoch::Rotation,
    /// Days after its end an epoch's key is destroyed; readings of an epoch
    /// closed that long are not stored.
    pub key_grace_days: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            gsrn_prefixes: Vec::new(),
            max_kwh_per_hour: 25_000,
            max_m3_per_hour: 10_000,
            spike_factor: 5_000,
            future_skew_micros: 15 * 60 * 1_000_000,
            max_age_micros: 1096 * 86_400 * 1_000_000,
            convert_wh: false,
            requires_elhub_consent: false,
            key_rotation: crate::epoch::Rotation::Never,
            key_grace_days: 60,
        }
    }
}

/// Errors in a tenant definition.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TenantError {
    #[error("tenant id must be 1-64 characters of a-z, 0-9, '-' or '_' (got {len} characters)")]
    BadId { len: usize },
    #[error("tenant id `{0}` is configured twice")]
    Duplicate(String),
}

/// The set of configured tenants, looked up by id.
#[derive(Debug, Clone, Default)]
pub struct TenantRegistry {
    tenants: Vec<Arc<Tenant>>,
    by_id: HashMap<String, usize>,
    /// Per tenant: retired (its stored data is kept until its retention ends; no
    /// new data is accepted).
    retired: Vec<bool>,
}

impl TenantRegistry {
    /// Build a registry.
    ///
    /// # Errors
    /// A malformed or duplicate tenant id.
    pub fn new(tenants: impl IntoIterator<Item = Tenant>) -> Result<Self, TenantError> {
        let mut registry = TenantRegistry::default();
        for tenant in tenants {
            if !valid_tenant_id(&tenant.id) {
                return Err(TenantError::BadId {
                    len: tenant.id.chars().count(),
                });
            }
            if registry.by_id.contains_key(&tenant.id) {
                return Err(TenantError::Duplicate(tenant.id));
            }
            registry
                .by_id
                .insert(tenant.id.clone(), registry.tenants.len());
            registry.tenants.push(Arc::new(tenant));
            registry.retired.push(false);
        }
        Ok(registry)
    }

    /// Mark tenants retired: their stored data stays under their retention
    /// (sweeps, key destruction, audit and erasure see them), but no new
    /// reading or subject event of theirs is accepted. Unknown ids are ignored.
    #[must_use]
    pub fn with_retired<'a>(mut self, ids: impl IntoIterator<Item = &'a str>) -> Self {
        for id in ids {
            if let Some(i) = self.index_of(id) {
                self.retired[i] = true;
            }
        }
        self
    }

    /// True when the tenant at `index` is retired.
    pub fn is_retired(&self, index: usize) -> bool {
        self.retired.get(index).copied().unwrap_or(false)
    }

    /// The tenant, if configured and accepting data (not retired).
    pub fn accepting(&self, id: &str) -> Option<&Tenant> {
        self.index_of(id)
            .filter(|i| !self.is_retired(*i))
            .map(|i| self.get(i))
    }

    /// The tenant's index (stable for the registry's life), if configured.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        // Called per row: a few tenants are found faster by comparing than hashing.
        if self.tenants.len() <= 8 {
            return self.tenants.iter().position(|t| t.id == id);
        }
        self.by_id.get(id).copied()
    }

    pub fn get(&self, index: usize) -> &Tenant {
        &self.tenants[index]
    }

    pub fn by_id(&self, id: &str) -> Option<&Tenant> {
        self.index_of(id).map(|i| self.get(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tenant> {
        self.tenants.iter().map(|t| t.as_ref())
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// True when any tenant is public (and so a pseudonym key is needed).
    pub fn any_public(&self) -> bool {
        self.iter().any(|t| t.deployment == Deployment::Public)
    }
}

/// Tenant ids become Delta partition values and metric labels: keep them boring.
pub fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> Tenant {
        Tenant {
            id: id.into(),
            deployment: Deployment::Public,
            timezone: chrono_tz::Europe::Oslo,
            rules: Rules::default(),
        }
    }

    #[test]
    fn rejects_ids_that_cannot_be_partition_values() {
        assert!(TenantRegistry::new([tenant("oslo-utility")]).is_ok());
        assert_eq!(
            TenantRegistry::new([tenant("Oslo/Utility")]).unwrap_err(),
            TenantError::BadId { len: 12 }
        );
        assert!(TenantRegistry::new([tenant("")]).is_err());
    }

    #[test]
    fn rejects_duplicates() {
        let err = TenantRegistry::new([tenant("a"), tenant("a")]).unwrap_err();
        assert_eq!(err, TenantError::Duplicate("a".into()));
    }
}
