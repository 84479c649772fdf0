//! Every PostgreSQL advisory-lock key tally takes, in one place, so two
//! jobs can never pick the same key by accident. Each is the ASCII of a
//! name, so they are recognisable in `pg_locks`.

/// The rollup maintenance leader (downsampling, retention): "tally.rol".
pub const MAINTENANCE: i64 = 0x7461_6c6c_7972_6f6c;
/// Creating rollup partitions (replicas racing on the DDL).
pub const PARTITIONS: i64 = MAINTENANCE + 1;
/// An alert evaluation round's commit: "tally.alr".
pub const ALERTS: i64 = 0x7461_6c6c_7961_6c72;
