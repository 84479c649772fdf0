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

/// Why a tenant's Stripe customer was not set.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// Another tenant has this customer (one tenant per customer).
    #[error("Stripe customer {customer} is already mapped to tenant {tenant}")]
    CustomerTaken { customer: String, tenant: String },
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

impl From<sqlx::Error> for MappingError {
    fn from(e: sqlx::Error) -> Self {
        MappingError::Store(e.into())
    }
}

const TENANT_COLUMNS: &str = "id, display_name, stripe_customer_id, status, created_ms";

impl Store {
    pub async fn tenant(&self, id: &str) -> Result<Option<TenantRow>> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
        let row = crate::on_pool!(self, |pool| {
            sqlx::query_as::<_, TenantRow>(sqlx::AssertSqlSafe(sql.as_str())).bind(id).fetch_optional(pool).await
        })?;
        Ok(row)
    }

    /// Sets (or with `None` clears) a tenant's Stripe customer, creating the
    /// tenant if it has no usage yet. Refused when another tenant has the
    /// customer.
    pub async fn set_stripe_customer(
        &self,
        tenant: &str,
        customer: Option<&str>,
        now_ms: i64,
    ) -> std::result::Result<TenantRow, MappingError> {
        use crate::store::BeginWrite;
        let upsert = format!(
            "INSERT INTO tenants (id, stripe_customer_id, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET stripe_customer_id = excluded.stripe_customer_id RETURNING {TENANT_COLUMNS}"
        );
        crate::on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            if let Some(c) = customer {
                let other: Option<String> =
                    sqlx::query_scalar("SELECT id FROM tenants WHERE stripe_customer_id = $1 AND id <> $2")
                        .bind(c)
                        .bind(tenant)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some(other) = other {
                    return Err(MappingError::CustomerTaken { customer: c.to_owned(), tenant: other });
                }
            }
            let row = sqlx::query_as::<_, TenantRow>(sqlx::AssertSqlSafe(upsert.as_str()))
                .bind(tenant)
                .bind(customer)
                .bind(now_ms)
                .fetch_one(&mut *tx)
                .await;
            let row = match row {
                Ok(row) => row,
                // Another transaction mapped it meanwhile (the unique index).
                Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
                    return Err(MappingError::CustomerTaken {
                        customer: customer.unwrap_or_default().to_owned(),
                        tenant: "another tenant".into(),
                    });
                }
                Err(e) => return Err(crate::StoreError::from(e).into()),
            };
            tx.commit().await.map_err(crate::StoreError::from)?;
            Ok(row)
        })
    }
}
