//! Every PostgreSQL advisory-lock key tally takes, in one place, so two
//! jobs can never pick the same key by accident. Each is the ASCII of a
//! name, so they are recognisable in `pg_locks`.

/// The rollup maintenance leader (downsampling, retention): "tally.rol".
pub const MAINTENANCE: i64 = 0x7461_6c6c_7972_6f6c;
/// Creating rollup partitions (replicas racing on the DDL).
pub const PARTITIONS: i64 = MAINTENANCE + 1;
/// An alert evaluation round's commit: "tally.alr".
pub const ALERTS: i64 = 0x7461_6c6c_7961_6c72;
/// Planning Stripe pushes (a transaction at a time): "tally.stp".
pub const STRIPE_PLAN: i64 = 0x7461_6c6c_7973_7470;
/// The Stripe sync's leader, held for as long as it leads: "tally.sts".
pub const STRIPE_SYNC: i64 = 0x7461_6c6c_7973_7473;
/// The Application Insights usage feed's leader: "tally.aiu".
pub const APPINSIGHTS_USAGE: i64 = 0x7461_6c6c_7961_6975;

/// Leadership of a long-running job among replicas sharing a PostgreSQL
/// database: a session advisory lock held on a connection of its own (out
/// of the pool), released when this is dropped or the connection dies. On
/// SQLite (one process) the caller always leads.
pub struct Leadership {
    conn: Option<sqlx::PgConnection>,
}

impl crate::Store {
    /// Takes the lead of the job `key` if no one holds it.
    pub async fn try_lead(&self, key: i64) -> crate::Result<Option<Leadership>> {
        match self {
            crate::Store::Sqlite(_) => Ok(Some(Leadership { conn: None })),
            crate::Store::Postgres(pool) => {
                let mut conn = pool.acquire().await?.detach();
                let got: bool =
                    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut conn).await?;
                Ok(got.then_some(Leadership { conn: Some(conn) }))
            }
        }
    }
}

impl Leadership {
    /// Whether the lead is still held: its connection answers within 5 s.
    pub async fn holds(&mut self) -> bool {
        let Some(conn) = &mut self.conn else { return true };
        let ping = sqlx::query("SELECT 1").execute(conn);
        matches!(tokio::time::timeout(std::time::Duration::from_secs(5), ping).await, Ok(Ok(_)))
    }
}
