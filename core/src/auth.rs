//! Who is calling: the principal an API key stands for.

use crate::TenantId;

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Reads every tenant, manages keys, may write for any tenant.
    Admin,
    /// A trusted backend: writes for the tenants its data names.
    Service(String),
    /// Pinned to one tenant: writes and reads only that tenant's data.
    Tenant(TenantId),
}

impl Principal {
    /// The tenant every item must belong to, for tenant keys.
    pub fn pinned_tenant(&self) -> Option<&TenantId> {
        match self {
            Principal::Tenant(t) => Some(t),
            _ => None,
        }
    }

    /// Whether this principal may read `tenant`'s data.
    pub fn may_read(&self, tenant: &TenantId) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Tenant(t) => t == tenant,
            Principal::Service(_) => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Admin => "admin",
            Principal::Service(_) => "service",
            Principal::Tenant(_) => "tenant",
        }
    }
}
