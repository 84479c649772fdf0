//! API keys: stored by public prefix with a hash of the whole key.

use crate::{Result, Store, on_pool};

/// One stored key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRow {
    /// Public prefix of the key.
    pub id: String,
    /// Hex sha256 of the whole key.
    pub hash: String,
    /// `tenant`, `service` or `admin`.
    pub kind: String,
    pub tenant: Option<String>,
    pub name: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

impl Store {
    pub async fn insert_api_key(&self, key: &ApiKeyRow) -> Result<()> {
        const INSERT: &str =
            "INSERT INTO api_keys (id, hash, kind, tenant, name, created_ms) VALUES ($1, $2, $3, $4, $5, $6)";
        on_pool!(self, |pool| sqlx::query(INSERT)
            .bind(&key.id)
            .bind(&key.hash)
            .bind(&key.kind)
            .bind(&key.tenant)
            .bind(&key.name)
            .bind(key.created_ms)
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// All keys, revoked ones included, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        const SELECT: &str =
            "SELECT id, hash, kind, tenant, name, created_ms, revoked_ms FROM api_keys ORDER BY created_ms, id";
        let rows = on_pool!(self, |pool| sqlx::query_as::<_, ApiKeyRow>(SELECT).fetch_all(pool).await)?;
        Ok(rows)
    }

    /// Marks a key revoked; false if there is no such (unrevoked) key.
    pub async fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<bool> {
        const UPDATE: &str = "UPDATE api_keys SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL";
        let n = on_pool!(self, |pool| sqlx::query(UPDATE)
            .bind(id)
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }
}
