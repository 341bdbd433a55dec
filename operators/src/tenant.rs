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
        }
        Ok(registry)
    }

    /// The tenant's index (stable for the registry's life), if configured.
    pub fn index_of(&self, id: &str) -> Option<usize> {
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
