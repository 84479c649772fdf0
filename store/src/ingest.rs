use sqlx::Row;
use tally_core::{Signal, TenantId};

use crate::{Result, Store, on_pool, store::BeginWrite};

/// Items of one signal accepted for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestCount {
    pub tenant: TenantId,
    pub signal: Signal,
    pub items: u64,
}

impl Store {
    /// Adds `rows` to the stored totals in one transaction: all of a flush
    /// lands or none of it. (A connection lost after COMMIT was sent leaves
    /// the caller unsure; its retry may then count twice. These are
    /// observability counts, not billing.) Rows are written in key order so
    /// replicas flushing the same rows cannot deadlock.
    pub async fn add_ingest_counts(&self, rows: &[IngestCount], now_ms: i64) -> Result<()> {
        let mut rows: Vec<&IngestCount> = rows.iter().collect();
        rows.sort_by(|a, b| (&a.tenant, a.signal).cmp(&(&b.tenant, b.signal)));
        const UPSERT: &str = "INSERT INTO ingest_counts (tenant, signal, items, updated_ms) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, signal) DO UPDATE \
             SET items = ingest_counts.items + excluded.items, updated_ms = excluded.updated_ms";
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            for row in &rows {
                sqlx::query(UPSERT)
                    .bind(row.tenant.as_str())
                    .bind(row.signal.as_str())
                    .bind(i64::try_from(row.items).unwrap_or(i64::MAX))
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Stored totals, for one tenant or all, ordered by tenant and signal.
    pub async fn ingest_counts(&self, tenant: Option<&TenantId>) -> Result<Vec<IngestCount>> {
        const SELECT: &str = "SELECT tenant, signal, items FROM ingest_counts \
             WHERE ($1 IS NULL OR tenant = $1) ORDER BY tenant, signal";
        let tenant = tenant.map(TenantId::as_str);
        let rows: Vec<(String, String, i64)> = on_pool!(self, |pool| {
            sqlx::query(SELECT)
                .bind(tenant)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(rows
            .into_iter()
            // Rows this version cannot parse (written by a newer one) are skipped.
            .filter_map(|(tenant, signal, items)| {
                Some(IngestCount {
                    tenant: TenantId::parse(&tenant).ok()?,
                    signal: Signal::parse(&signal)?,
                    items: u64::try_from(items).ok()?,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_counts_add_up_and_filter_by_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("", dir.path()).await.unwrap();
        store.migrate().await.unwrap();
        store.migrate().await.unwrap(); // idempotent
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        let row = |t: &TenantId, s, n| IngestCount { tenant: t.clone(), signal: s, items: n };
        store.add_ingest_counts(&[row(&a, Signal::Spans, 3), row(&b, Signal::Logs, 1)], 1).await.unwrap();
        store.add_ingest_counts(&[row(&a, Signal::Spans, 4)], 2).await.unwrap();
        assert_eq!(store.ingest_counts(Some(&a)).await.unwrap(), vec![row(&a, Signal::Spans, 7)]);
        assert_eq!(store.ingest_counts(None).await.unwrap().len(), 2);
    }
}
