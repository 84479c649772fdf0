//! Tenants: created on first sight of their usage.

use crate::{Result, Store};

/// A tenant as stored (created on first sight of its usage).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TenantRow {
    pub id: String,
    pub display_name: Option<String>,
    pub stripe_customer_id: Option<String>,
    pub status: String,
    pub created_ms: i64,
}

impl Store {
    pub async fn tenants(&self) -> Result<Vec<TenantRow>> {
        const SELECT: &str = "SELECT id, display_name, stripe_customer_id, status, created_ms FROM tenants ORDER BY id";
        let rows = crate::on_pool!(self, |pool| sqlx::query_as::<_, TenantRow>(SELECT).fetch_all(pool).await)?;
        Ok(rows)
    }
}
