//! PostgreSQL: whole columns bound as arrays, one statement per step.

use sqlx::PgPool;

use super::*;

/// Creates the partitions covering `starts` that do not exist yet,
/// under an advisory lock so replicas do not race on the DDL.
pub async fn ensure_partitions(pool: &PgPool, table: RollupTable, starts: impl Iterator<Item = i64>) -> Result<()> {
    let chunks: BTreeSet<i64> = starts.map(|s| table.chunk_start(s)).collect();
    for chunk in chunks {
        let name = table.partition(chunk);
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(&name).fetch_one(pool).await?;
        if exists {
            continue;
        }
        let mut tx = pool.begin_write().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(crate::locks::PARTITIONS).execute(&mut *tx).await?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {} FOR VALUES FROM ({chunk}) TO ({})",
            table.name(),
            chunk + table.chunk_ms()
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

page_fn!(PgConnection);

impl RollupSql for PgConnection {
    fn page(
        &mut self,
        source: &str,
        start: i64,
        end: i64,
        after: Option<&RollupRow>,
    ) -> impl Future<Output = Result<Vec<RollupRow>>> + Send {
        page(self, source, start, end, after)
    }
    fn merge_rows(&mut self, table: RollupTable, rows: &[&RollupRow]) -> impl Future<Output = Result<()>> + Send {
        merge_rows(self, table, rows)
    }
}

/// Inserts `rows` (sorted by key) into `table`, merging those whose
/// series and start already have a row.
pub async fn merge_rows(tx: &mut PgConnection, table: RollupTable, rows: &[&RollupRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let t = table.name();
    let inserted = bind_values(
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {t} ({COLUMNS}, hist_idx, hist_cnt) \
             SELECT {COLUMNS}, hist_idx::int2[], hist_cnt::int8[] FROM UNNEST($1::text[], $2::int2[], $3::text[], \
             $4::text[], $5::text[], $6::int8[], $7::int8[], $8::int8[], $9::float8[], $10::float8[], $11::float8[], \
             $12::float8[], $13::int8[], $14::bytea[], $15::text[], $16::text[]) AS u({COLUMNS}, hist_idx, hist_cnt) \
             ON CONFLICT DO NOTHING RETURNING {KEY_ORDER}"
        ))),
        rows.iter().copied(),
    )
    .fetch_all(&mut *tx)
    .await?;
    if inserted.len() == rows.len() {
        return Ok(());
    }
    let inserted: HashSet<OwnedKey> = inserted
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let conflicts: Vec<&RollupRow> = rows.iter().copied().filter(|r| !inserted.contains(&owned_key(r))).collect();
    let stored = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS_R} FROM {t} r JOIN UNNEST($1::text[], $2::int2[], $3::text[], $4::text[], $5::text[], $6::int8[]) \
         AS k(tenant, kind, service, name, detail, start_ms) USING ({KEY_ORDER}) \
         ORDER BY {KEY_ORDER} FOR UPDATE OF r"
    )))
    .bind(conflicts.iter().map(|r| r.key.tenant.as_str()).collect::<Vec<_>>())
    .bind(conflicts.iter().map(|r| r.key.kind as i16).collect::<Vec<_>>())
    .bind(conflicts.iter().map(|r| &*r.key.service).collect::<Vec<_>>())
    .bind(conflicts.iter().map(|r| &*r.key.name).collect::<Vec<_>>())
    .bind(conflicts.iter().map(|r| &*r.key.detail).collect::<Vec<_>>())
    .bind(conflicts.iter().map(|r| r.start_ms).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let merged = merge_stored(stored.iter().map(decode_row), &conflicts)?;
    bind_values(
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {t} r SET count = u.count, errors = u.errors, sum = u.sum, min = u.min, max = u.max, \
             last = u.last, last_ms = u.last_ms, hist = u.hist, hist_idx = u.hist_idx::int2[], \
             hist_cnt = u.hist_cnt::int8[] \
             FROM UNNEST($1::text[], $2::int2[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[], \
             $8::int8[], $9::float8[], $10::float8[], $11::float8[], $12::float8[], $13::int8[], $14::bytea[], \
             $15::text[], $16::text[]) AS u({COLUMNS}, hist_idx, hist_cnt) \
             WHERE (r.tenant, r.kind, r.service, r.name, r.detail, r.start_ms) = \
                   (u.tenant, u.kind, u.service, u.name, u.detail, u.start_ms)"
        ))),
        merged.iter(),
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn bind_values<'q, 'r>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    rows: impl Iterator<Item = &'r RollupRow> + Clone,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let v = |f: fn(&RollupValues) -> Option<f64>| rows.clone().map(|r| f(&r.values)).collect::<Vec<_>>();
    q.bind(rows.clone().map(|r| r.key.tenant.as_str().to_owned()).collect::<Vec<_>>())
        .bind(rows.clone().map(|r| r.key.kind as i16).collect::<Vec<_>>())
        .bind(rows.clone().map(|r| r.key.service.to_string()).collect::<Vec<_>>())
        .bind(rows.clone().map(|r| r.key.name.to_string()).collect::<Vec<_>>())
        .bind(rows.clone().map(|r| r.key.detail.to_string()).collect::<Vec<_>>())
        .bind(rows.clone().map(|r| r.start_ms).collect::<Vec<_>>())
        .bind(rows.clone().map(|r| db_count(r.values.count)).collect::<Vec<_>>())
        .bind(rows.clone().map(|r| db_count(r.values.errors)).collect::<Vec<_>>())
        .bind(rows.clone().map(|r| r.values.sum).collect::<Vec<_>>())
        .bind(v(RollupValues::min_opt))
        .bind(v(RollupValues::max_opt))
        .bind(v(RollupValues::last_opt))
        .bind(rows.clone().map(|r| r.values.last_opt().map(|_| r.values.last_ms)).collect::<Vec<_>>())
        .bind(rows.clone().map(|r| r.values.hist.as_ref().map(Histogram::encode)).collect::<Vec<_>>())
        .bind(
            rows.clone().map(|r| r.values.hist.as_ref().map(|h| array_literal(h, |b| b.0.into()))).collect::<Vec<_>>(),
        )
        .bind(rows.map(|r| r.values.hist.as_ref().map(|h| array_literal(h, |b| b.1))).collect::<Vec<_>>())
}

/// `{a,b,…}`: one column of the histogram's buckets as a PostgreSQL array
/// literal. Arrays of arrays do not pass through UNNEST (it flattens them),
/// so each row's array travels as text and is cast in the statement.
fn array_literal(h: &Histogram, column: fn(&(u16, u64)) -> u64) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(2 + h.buckets() * 6);
    s.push('{');
    for (i, b) in h.bucket_counts().iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{}", column(b));
    }
    s.push('}');
    s
}
