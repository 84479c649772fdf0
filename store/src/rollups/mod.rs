//! Telemetry rollups: one row per series and window in three tables by
//! resolution, merged on conflict, downsampled and expired by chunks.
//!
//! Replicas (and late data for a window already written) merge rather than
//! clobber: rows are inserted with `ON CONFLICT DO NOTHING`, and the rows
//! that already existed are read under a row lock, merged in memory (counts
//! add, histograms merge) and updated — all in one transaction, keys in
//! sorted order so concurrent writers cannot deadlock. Histograms cannot be
//! merged in SQL, which is why the merge happens here rather than in an
//! `ON CONFLICT DO UPDATE`.
//!
//! On PostgreSQL each table is range-partitioned on `start_ms` by chunks
//! ([`RollupTable::chunk_ms`]); partitions are created as data arrives, and
//! retention drops whole partitions. On SQLite a chunk is just a range of
//! rows that retention deletes.

use std::collections::{BTreeSet, HashSet};

use sqlx::{AssertSqlSafe, PgConnection, Row, SqliteConnection};
use tally_core::{
    DAY_MS, Histogram, TenantId,
    rollup::{RollupKind, RollupRow, RollupValues, SeriesKey},
};

use crate::{Result, Store, StoreError, store::BeginWrite};

/// The three rollup resolutions, finest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RollupTable {
    /// The aggregator's windows (1 minute by default).
    Windows,
    Hours,
    Days,
}

impl RollupTable {
    pub const ALL: [RollupTable; 3] = [RollupTable::Windows, RollupTable::Hours, RollupTable::Days];

    pub fn name(self) -> &'static str {
        match self {
            RollupTable::Windows => "rollup_windows",
            RollupTable::Hours => "rollup_hours",
            RollupTable::Days => "rollup_days",
        }
    }

    /// Time span of one partition (PostgreSQL) and of one retention step.
    pub fn chunk_ms(self) -> i64 {
        match self {
            RollupTable::Windows => DAY_MS,
            RollupTable::Hours => 30 * DAY_MS,
            RollupTable::Days => 365 * DAY_MS,
        }
    }

    fn chunk_start(self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.chunk_ms()) * self.chunk_ms()
    }

    fn partition(self, chunk_start: i64) -> String {
        let n = chunk_start.div_euclid(self.chunk_ms());
        if n < 0 { format!("{}_pm{}", self.name(), -n) } else { format!("{}_p{n}", self.name()) }
    }
}

/// What to read: one tenant's series of one kind in `[from_ms, to_ms)`,
/// optionally of one service, name (operation, severity or metric) and detail.
#[derive(Debug, Clone, Copy)]
pub struct RollupFilter<'a> {
    pub tenant: &'a TenantId,
    pub kind: RollupKind,
    pub service: Option<&'a str>,
    pub name: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// A condition on one key column, for [`Store::recent_rollups`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMatch<'a> {
    Any,
    Is(&'a str),
    IsNot(&'a str),
}

/// What alert rules read: recent window rows of one kind.
#[derive(Debug, Clone, Copy)]
pub struct RecentFilter<'a> {
    pub kind: RollupKind,
    pub tenant: Option<&'a TenantId>,
    pub service: KeyMatch<'a>,
    pub name: KeyMatch<'a>,
    pub detail: KeyMatch<'a>,
    pub from_ms: i64,
    pub to_ms: i64,
}

const COLUMNS: &str =
    "tenant, kind, service, name, detail, start_ms, count, errors, sum, min, max, last, last_ms, hist";
/// [`COLUMNS`] of table alias `r`.
const COLUMNS_R: &str = "r.tenant, r.kind, r.service, r.name, r.detail, r.start_ms, r.count, r.errors, r.sum, r.min, r.max, r.last, r.last_ms, r.hist";
const KEY_ORDER: &str = "tenant, kind, service, name, detail, start_ms";
/// Rows per page when downsampling, and per write when merging them on.
const PAGE: i64 = 5000;

/// Counts are BIGINT: a hostile sender's u64 counts saturate rather than wrap.
fn db_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn sort_key(r: &RollupRow) -> (&SeriesKey, i64) {
    (&r.key, r.start_ms)
}

type OwnedKey = (String, i16, String, String, String, i64);

fn owned_key(r: &RollupRow) -> OwnedKey {
    let k = &r.key;
    (
        k.tenant.as_str().to_owned(),
        k.kind as i16,
        k.service.to_string(),
        k.name.to_string(),
        k.detail.to_string(),
        r.start_ms,
    )
}

/// A row of [`COLUMNS`] (by position: no name lookups on this hot path of
/// queries; the histogram is decoded from the row's buffer, not a copy).
fn decode_row<R: Row>(row: &R) -> Result<RollupRow>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r [u8]: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i16: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let corrupt = |what: String| StoreError::Corrupt(what);
    let tenant: &str = row.try_get(0)?;
    let kind: i16 = row.try_get(1)?;
    let hist: Option<&[u8]> = row.try_get(13)?;
    // A histogram that does not decode (not written by tally) loses its
    // percentiles, not the row or the whole query.
    let hist = hist.and_then(|b| {
        Histogram::decode(b).inspect_err(|e| tracing::warn!(tenant, error = %e, "stored rollup histogram ignored")).ok()
    });
    Ok(RollupRow {
        key: SeriesKey {
            kind: RollupKind::from_i16(kind).ok_or_else(|| corrupt(format!("rollup kind {kind}")))?,
            tenant: TenantId::parse(tenant).map_err(|e| corrupt(format!("rollup tenant {tenant:?}: {e}")))?,
            service: row.try_get::<&str, _>(2)?.into(),
            name: row.try_get::<&str, _>(3)?.into(),
            detail: row.try_get::<&str, _>(4)?.into(),
        },
        start_ms: row.try_get(5)?,
        values: RollupValues {
            count: row.try_get::<i64, _>(6)? as u64,
            errors: row.try_get::<i64, _>(7)? as u64,
            sum: row.try_get(8)?,
            min: row.try_get::<Option<f64>, _>(9)?.unwrap_or(f64::INFINITY),
            max: row.try_get::<Option<f64>, _>(10)?.unwrap_or(f64::NEG_INFINITY),
            last: row.try_get::<Option<f64>, _>(11)?.unwrap_or(0.0),
            last_ms: row.try_get::<Option<i64>, _>(12)?.unwrap_or(i64::MIN),
            hist,
        },
    })
}

/// Groups rows sorted by (key, start) into rows of `width_ms`, merging.
struct Downsampler {
    width_ms: i64,
    current: Option<RollupRow>,
}

impl Downsampler {
    /// Adds a row; returns the previous group when this one starts a new one.
    fn push(&mut self, mut row: RollupRow) -> Option<RollupRow> {
        row.start_ms = row.start_ms.div_euclid(self.width_ms) * self.width_ms;
        match &mut self.current {
            Some(c) if c.key == row.key && c.start_ms == row.start_ms => {
                c.values.merge(&row.values);
                None
            }
            _ => self.current.replace(row),
        }
    }
}

impl Store {
    /// Writes rows into `table`, merging each into the row already stored
    /// for its series and start, if any.
    pub async fn write_rollups(&self, table: RollupTable, rows: &[RollupRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut sorted: Vec<&RollupRow> = rows.iter().collect();
        sorted.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        match self {
            Store::Postgres(pool) => {
                pg::ensure_partitions(pool, table, sorted.iter().map(|r| r.start_ms)).await?;
                let mut tx = pool.begin_write().await?;
                pg::merge_rows(&mut tx, table, &sorted).await?;
                tx.commit().await?;
            }
            Store::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                lite::merge_rows(&mut tx, table, &sorted).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Rows matching `f` from every resolution, ordered by start. Only the
    /// filters given become conditions, so each is an index condition.
    pub async fn read_rollups(&self, f: &RollupFilter<'_>) -> Result<Vec<RollupRow>> {
        let optional = [("service", f.service), ("name", f.name), ("detail", f.detail)];
        let mut conditions = String::new();
        let mut n = 4;
        for (column, value) in &optional {
            if value.is_some() {
                n += 1;
                conditions.push_str(&format!(" AND {column} = ${n}"));
            }
        }
        let select = |t: RollupTable| {
            format!(
                "SELECT {COLUMNS} FROM {} WHERE tenant = $1 AND kind = $2 AND start_ms >= $3 AND start_ms < $4{conditions}",
                t.name()
            )
        };
        let sql = RollupTable::ALL.map(select).join(" UNION ALL ") + " ORDER BY start_ms";
        crate::on_pool!(self, |pool| {
            let mut q = sqlx::query(AssertSqlSafe(sql))
                .bind(f.tenant.as_str())
                .bind(f.kind as i16)
                .bind(f.from_ms)
                .bind(f.to_ms);
            for value in optional.iter().filter_map(|(_, v)| *v) {
                q = q.bind(value);
            }
            let rows = q.fetch_all(pool).await?;
            rows.iter().map(decode_row).collect()
        })
    }

    /// Window rows of one kind in `[from_ms, to_ms)` across tenants (or of
    /// one), matching each key condition: what alert rules read every round.
    pub async fn recent_rollups(&self, f: &RecentFilter<'_>) -> Result<Vec<RollupRow>> {
        let mut sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE start_ms >= $1 AND start_ms < $2 AND kind = $3",
            RollupTable::Windows.name()
        );
        let mut binds: Vec<&str> = Vec::new();
        let conditions = [
            ("tenant", f.tenant.map_or(KeyMatch::Any, |t| KeyMatch::Is(t.as_str()))),
            ("service", f.service),
            ("name", f.name),
            ("detail", f.detail),
        ];
        for (column, m) in conditions {
            let (op, value) = match m {
                KeyMatch::Any => continue,
                KeyMatch::Is(v) => ("=", v),
                KeyMatch::IsNot(v) => ("<>", v),
            };
            binds.push(value);
            sql.push_str(&format!(" AND {column} {op} ${}", binds.len() + 3));
        }
        crate::on_pool!(self, |pool| {
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(f.from_ms).bind(f.to_ms).bind(f.kind as i16);
            for value in binds {
                q = q.bind(value);
            }
            let rows = q.fetch_all(pool).await?;
            rows.iter().map(decode_row).collect()
        })
    }

    /// Starts of the chunks of `table` that end at or before `cutoff_ms`
    /// and hold (or may hold) rows, oldest first.
    pub async fn expired_rollup_chunks(&self, table: RollupTable, cutoff_ms: i64) -> Result<Vec<i64>> {
        let w = table.chunk_ms();
        let starts: Vec<i64> = match self {
            Store::Postgres(pool) => {
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                     JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1",
                )
                .bind(table.name())
                .fetch_all(pool)
                .await?;
                let prefix = format!("{}_p", table.name());
                let mut starts: Vec<i64> = names
                    .iter()
                    .filter_map(|n| n.strip_prefix(&prefix))
                    .filter_map(|n| match n.strip_prefix('m') {
                        Some(neg) => neg.parse::<i64>().ok().map(|v| -v),
                        None => n.parse().ok(),
                    })
                    .map(|n| n * w)
                    .collect();
                starts.sort_unstable();
                starts
            }
            Store::Sqlite(pool) => {
                let sql = format!("SELECT MIN(start_ms) FROM {}", table.name());
                let min: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(pool).await?;
                let Some(min) = min else { return Ok(Vec::new()) };
                (table.chunk_start(min)..cutoff_ms).step_by(w as usize).collect()
            }
        };
        Ok(starts.into_iter().filter(|s| s + w <= cutoff_ms).collect())
    }

    /// Moves one expired chunk of `from` into `into` at `width_ms`
    /// resolution (histograms merged exactly), or only drops it when `into`
    /// is `None` — in one transaction, so a crash cannot count a chunk
    /// twice. Returns the rows read, or `None` when another replica holds
    /// the maintenance lock (PostgreSQL).
    pub async fn downsample_rollup_chunk(
        &self,
        from: RollupTable,
        chunk_start: i64,
        into: Option<(RollupTable, i64)>,
    ) -> Result<Option<u64>> {
        let chunk_end = chunk_start + from.chunk_ms();
        match self {
            Store::Postgres(pool) => {
                if let Some((to, _)) = into {
                    pg::ensure_partitions(pool, to, [chunk_start, chunk_end - 1].into_iter()).await?;
                }
                let mut tx = pool.begin_write().await?;
                let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(crate::locks::MAINTENANCE)
                    .fetch_one(&mut *tx)
                    .await?;
                if !locked {
                    return Ok(None);
                }
                let partition = from.partition(chunk_start);
                let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                    .bind(&partition)
                    .fetch_one(&mut *tx)
                    .await?;
                if !exists {
                    return Ok(Some(0));
                }
                // Writers insert with ROW EXCLUSIVE: this waits for those in
                // flight and holds off new ones until the partition is gone, so
                // no row lands after it was read. (A writer held off finds no
                // partition, fails, and recreates it on retry; the next pass
                // moves that row on.)
                sqlx::query(AssertSqlSafe(format!("LOCK TABLE {partition} IN SHARE ROW EXCLUSIVE MODE")))
                    .execute(&mut *tx)
                    .await?;
                let read = move_chunk(&mut *tx, &partition, chunk_start, chunk_end, into).await?;
                sqlx::query(AssertSqlSafe(format!("DROP TABLE {partition}"))).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(Some(read))
            }
            Store::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                let read = move_chunk(&mut *tx, from.name(), chunk_start, chunk_end, into).await?;
                sqlx::query(AssertSqlSafe(format!(
                    "DELETE FROM {} WHERE start_ms >= $1 AND start_ms < $2",
                    from.name()
                )))
                .bind(chunk_start)
                .bind(chunk_end)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(read))
            }
        }
    }
}

/// One dialect's reading and merging of rollup rows (see [`pg`], [`lite`]).
trait RollupSql: Send {
    /// Rows of `source` in `[start, end)` after the key of `after`, in key order.
    fn page(
        &mut self,
        source: &str,
        start: i64,
        end: i64,
        after: Option<&RollupRow>,
    ) -> impl Future<Output = Result<Vec<RollupRow>>> + Send;
    /// Inserts `rows` (sorted by key) into `table`, merging those whose
    /// series and start already have a row.
    fn merge_rows(&mut self, table: RollupTable, rows: &[&RollupRow]) -> impl Future<Output = Result<()>> + Send;
}

/// Moves `source`'s rows of `[start, end)` into `into` at its width
/// (merged per series and step), or only counts them when `into` is None.
/// Pages are read in key order, so a group is complete when the key
/// changes; the group straddling a page boundary is carried over.
async fn move_chunk<C: RollupSql>(
    tx: &mut C,
    source: &str,
    start: i64,
    end: i64,
    into: Option<(RollupTable, i64)>,
) -> Result<u64> {
    let mut read = 0u64;
    let Some((to, width_ms)) = into else { return Ok(read) };
    let mut groups = Downsampler { width_ms, current: None };
    let mut out: Vec<RollupRow> = Vec::new();
    let mut after: Option<RollupRow> = None;
    loop {
        let page = tx.page(source, start, end, after.as_ref()).await?;
        read += page.len() as u64;
        let last = page.last().cloned();
        for row in page {
            out.extend(groups.push(row));
        }
        if out.len() as i64 >= PAGE || last.is_none() {
            out.extend(if last.is_none() { groups.current.take() } else { None });
            let refs: Vec<&RollupRow> = out.iter().collect();
            tx.merge_rows(to, &refs).await?;
            out.clear();
        }
        match last {
            Some(l) => after = Some(l),
            None => return Ok(read),
        }
    }
}

/// The page query shared by both backends: rows of `[start, end)` after
/// the key of `after`, in key order.
fn page_sql(source: &str, after: bool) -> String {
    let cursor =
        if after { " AND (tenant, kind, service, name, detail, start_ms) > ($3, $4, $5, $6, $7, $8)" } else { "" };
    format!(
        "SELECT {COLUMNS} FROM {source} WHERE start_ms >= $1 AND start_ms < $2{cursor} ORDER BY {KEY_ORDER} LIMIT {PAGE}"
    )
}

/// `page(tx, source, start, end, after)`: one page of [`page_sql`] on a
/// backend's connection type (the same code for both; only the type differs).
macro_rules! page_fn {
    ($conn:ty) => {
        pub async fn page(
            tx: &mut $conn,
            source: &str,
            start: i64,
            end: i64,
            after: Option<&RollupRow>,
        ) -> Result<Vec<RollupRow>> {
            let mut q = sqlx::query(AssertSqlSafe(page_sql(source, after.is_some()))).bind(start).bind(end);
            if let Some(a) = after {
                let k = &a.key;
                q = q
                    .bind(k.tenant.as_str().to_owned())
                    .bind(k.kind as i16)
                    .bind(k.service.to_string())
                    .bind(k.name.to_string())
                    .bind(k.detail.to_string())
                    .bind(a.start_ms);
            }
            q.fetch_all(&mut *tx).await?.iter().map(decode_row).collect()
        }
    };
}

/// Each conflicting row merged into its stored row (matched by key).
fn merge_stored(stored: impl Iterator<Item = Result<RollupRow>>, conflicts: &[&RollupRow]) -> Result<Vec<RollupRow>> {
    let mut by_key: std::collections::HashMap<OwnedKey, RollupRow> = std::collections::HashMap::new();
    for row in stored {
        let row = row?;
        by_key.insert(owned_key(&row), row);
    }
    let mut merged = Vec::with_capacity(conflicts.len());
    for r in conflicts {
        match by_key.remove(&owned_key(r)) {
            Some(mut s) => {
                s.values.merge(&r.values);
                merged.push(s);
            }
            // Cannot happen inside the transaction (the row conflicted and is
            // locked); writing the new row is the safe answer regardless.
            None => merged.push((*r).clone()),
        }
    }
    Ok(merged)
}

mod lite;
mod pg;
