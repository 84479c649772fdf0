-- Telemetry rollups (observability-grade, not billing): one row per series
-- and window, in three tables by resolution (windows — 1 minute by default
-- — hours, days). See the PostgreSQL migration for the meaning of columns;
-- there the tables are partitioned by time, here retention deletes rows.
CREATE TABLE rollup_windows (
    tenant   TEXT    NOT NULL,
    kind     INTEGER NOT NULL,
    service  TEXT    NOT NULL,
    name     TEXT    NOT NULL,
    detail   TEXT    NOT NULL,
    start_ms INTEGER NOT NULL,
    count    INTEGER NOT NULL,
    errors   INTEGER NOT NULL,
    sum      REAL    NOT NULL,
    min      REAL,
    max      REAL,
    last     REAL,
    last_ms  INTEGER,
    hist     BLOB,
    PRIMARY KEY (tenant, kind, service, name, detail, start_ms)
) WITHOUT ROWID;
CREATE INDEX rollup_windows_by_time ON rollup_windows (tenant, kind, start_ms);

CREATE TABLE rollup_hours (
    tenant   TEXT    NOT NULL,
    kind     INTEGER NOT NULL,
    service  TEXT    NOT NULL,
    name     TEXT    NOT NULL,
    detail   TEXT    NOT NULL,
    start_ms INTEGER NOT NULL,
    count    INTEGER NOT NULL,
    errors   INTEGER NOT NULL,
    sum      REAL    NOT NULL,
    min      REAL,
    max      REAL,
    last     REAL,
    last_ms  INTEGER,
    hist     BLOB,
    PRIMARY KEY (tenant, kind, service, name, detail, start_ms)
) WITHOUT ROWID;
CREATE INDEX rollup_hours_by_time ON rollup_hours (tenant, kind, start_ms);

CREATE TABLE rollup_days (
    tenant   TEXT    NOT NULL,
    kind     INTEGER NOT NULL,
    service  TEXT    NOT NULL,
    name     TEXT    NOT NULL,
    detail   TEXT    NOT NULL,
    start_ms INTEGER NOT NULL,
    count    INTEGER NOT NULL,
    errors   INTEGER NOT NULL,
    sum      REAL    NOT NULL,
    min      REAL,
    max      REAL,
    last     REAL,
    last_ms  INTEGER,
    hist     BLOB,
    PRIMARY KEY (tenant, kind, service, name, detail, start_ms)
) WITHOUT ROWID;
CREATE INDEX rollup_days_by_time ON rollup_days (tenant, kind, start_ms);
