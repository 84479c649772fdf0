-- The SQLite tree's 0008 rebuilds tables to match this schema (NOT NULL on
-- tenants.created_ms and on TEXT primary keys); PostgreSQL already has it.
-- Kept so both trees number their migrations alike.
SELECT 1;
