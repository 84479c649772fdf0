//! SQLite: one writer at a time, so row-at-a-time inside the transaction.

use super::*;

page_fn!(SqliteConnection);

impl RollupSql for SqliteConnection {
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

pub async fn merge_rows(tx: &mut SqliteConnection, table: RollupTable, rows: &[&RollupRow]) -> Result<()> {
    let t = table.name();
    let insert = format!(
        "INSERT INTO {t} ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT DO NOTHING"
    );
    let select = format!(
        "SELECT {COLUMNS} FROM {t} WHERE tenant = $1 AND kind = $2 AND service = $3 AND name = $4 \
         AND detail = $5 AND start_ms = $6"
    );
    let update = format!(
        "UPDATE {t} SET count = $7, errors = $8, sum = $9, min = $10, max = $11, last = $12, last_ms = $13, \
         hist = $14 WHERE tenant = $1 AND kind = $2 AND service = $3 AND name = $4 AND detail = $5 \
         AND start_ms = $6"
    );
    for r in rows {
        let done = bind_row(sqlx::query(AssertSqlSafe(insert.as_str())), r).execute(&mut *tx).await?;
        if done.rows_affected() == 1 {
            continue;
        }
        let k = &r.key;
        let stored = sqlx::query(AssertSqlSafe(select.as_str()))
            .bind(k.tenant.as_str())
            .bind(k.kind as i16)
            .bind(&*k.service)
            .bind(&*k.name)
            .bind(&*k.detail)
            .bind(r.start_ms)
            .fetch_optional(&mut *tx)
            .await?;
        let merged = merge_stored(stored.iter().map(decode_row), &[r])?;
        bind_row(sqlx::query(AssertSqlSafe(update.as_str())), &merged[0]).execute(&mut *tx).await?;
    }
    Ok(())
}

fn bind_row<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    r: &'q RollupRow,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let v = &r.values;
    q.bind(r.key.tenant.as_str())
        .bind(r.key.kind as i16)
        .bind(&*r.key.service)
        .bind(&*r.key.name)
        .bind(&*r.key.detail)
        .bind(r.start_ms)
        .bind(db_count(v.count))
        .bind(db_count(v.errors))
        .bind(v.sum)
        .bind(v.min_opt())
        .bind(v.max_opt())
        .bind(v.last_opt())
        .bind(v.last_opt().map(|_| v.last_ms))
        .bind(v.hist.as_ref().map(Histogram::encode))
}
