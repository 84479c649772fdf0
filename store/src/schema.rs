//! The schema as the database reports it, so a test can hold the SQLite and
//! PostgreSQL migrations to one shape (they are two trees of SQL and have
//! drifted before).

use sqlx::Row;

use crate::{Result, Store};

/// One column, its type reduced to what both engines share.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Column {
    pub table: String,
    pub name: String,
    /// `integer`, `float`, `text`, `bytes`, or `array` (PostgreSQL only;
    /// SQLite stores arrays as text or blobs) — or the type as reported
    /// when it is none of these.
    pub kind: String,
    /// NULL is refused (declared NOT NULL, or enforced by the primary key).
    pub not_null: bool,
}

/// The type classes of both engines' type names.
fn kind(declared: &str) -> String {
    let t = declared.to_ascii_lowercase();
    let class = match t.as_str() {
        "integer" | "bigint" | "smallint" | "int" | "int2" | "int4" | "int8" => "integer",
        "real" | "double precision" | "float8" | "float4" => "float",
        "text" | "character varying" | "varchar" => "text",
        "blob" | "bytea" => "bytes",
        "array" => "array",
        _ => return t,
    };
    class.to_owned()
}

impl Store {
    /// Every column of every table (partitions and sqlx's own table left
    /// out), sorted by table and column.
    pub async fn columns(&self) -> Result<Vec<Column>> {
        let mut out = Vec::new();
        match self {
            Store::Postgres(pool) => {
                let rows = sqlx::query(
                    "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.is_nullable = 'NO' \
                     FROM information_schema.columns c JOIN pg_class t ON t.relname = c.table_name \
                     JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = c.table_schema \
                     WHERE c.table_schema = current_schema() AND NOT t.relispartition \
                     AND c.table_name <> '_sqlx_migrations'",
                )
                .fetch_all(pool)
                .await?;
                for r in rows {
                    let declared: String = r.try_get(2)?;
                    out.push(Column {
                        table: r.try_get(0)?,
                        name: r.try_get(1)?,
                        kind: kind(&declared),
                        not_null: r.try_get(3)?,
                    });
                }
            }
            Store::Sqlite(pool) => {
                let tables: Vec<(String, String)> = sqlx::query_as(
                    "SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
                     AND name <> '_sqlx_migrations'",
                )
                .fetch_all(pool)
                .await?;
                for (table, sql) in tables {
                    // A WITHOUT ROWID table's primary key refuses NULL; a
                    // rowid table's (other than INTEGER PRIMARY KEY) does not.
                    let strict_pk = sql.to_ascii_uppercase().contains("WITHOUT ROWID");
                    let rows = sqlx::query("SELECT name, type, \"notnull\", pk FROM pragma_table_info($1)")
                        .bind(&table)
                        .fetch_all(pool)
                        .await?;
                    for r in rows {
                        let declared: String = r.try_get(1)?;
                        let not_null: i64 = r.try_get(2)?;
                        let pk: i64 = r.try_get(3)?;
                        let integer_pk = pk > 0 && declared.eq_ignore_ascii_case("integer");
                        out.push(Column {
                            table: table.clone(),
                            name: r.try_get(0)?,
                            kind: kind(&declared),
                            not_null: not_null == 1 || (pk > 0 && (strict_pk || integer_pk)),
                        });
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Migration 0008 rebuilds three SQLite tables: what they held survives,
    /// and the constraints hold afterwards.
    #[tokio::test]
    async fn sqlite_rebuild_keeps_rows_and_adds_not_null() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("", dir.path()).await.unwrap();
        let Store::Sqlite(pool) = &store else { unreachable!() };
        sqlx::migrate!("../migrations/sqlite").run_to(7, pool).await.unwrap();
        for sql in [
            "INSERT INTO tenants (id, created_ms) VALUES ('acme', 5), ('old', NULL)",
            "INSERT INTO api_keys (id, hash, kind, created_ms) VALUES ('k1', 'h', 'admin', 1)",
            "INSERT INTO usage_streams (stream_id, start_time_ns, time_ns, value) VALUES ('s', 1, 2, 3.5)",
        ] {
            sqlx::query(sql).execute(pool).await.unwrap();
        }
        store.migrate().await.unwrap();
        let tenants: Vec<(String, i64)> =
            sqlx::query_as("SELECT id, created_ms FROM tenants ORDER BY id").fetch_all(pool).await.unwrap();
        assert_eq!(tenants, [("acme".to_owned(), 5), ("old".to_owned(), 0)]);
        let value: f64 =
            sqlx::query_scalar("SELECT value FROM usage_streams WHERE stream_id = 's'").fetch_one(pool).await.unwrap();
        assert_eq!(value, 3.5);
        assert_eq!(store.api_keys().await.unwrap().len(), 1);
        assert!(sqlx::query("INSERT INTO tenants (id, created_ms) VALUES ('x', NULL)").execute(pool).await.is_err());
        assert!(sqlx::query("INSERT INTO tenants (id, created_ms) VALUES (NULL, 1)").execute(pool).await.is_err());
    }
}
