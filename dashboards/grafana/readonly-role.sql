-- A SELECT-only PostgreSQL role for Grafana's tally datasource. Grafana runs
-- whatever SQL a dashboard editor writes ("Grafana does not validate the
-- safety of queries"), so its user may read tally's telemetry, alert and
-- billing tables and nothing else: no api_keys (key hashes), no Stripe
-- webhook log, no writes (every transaction is read-only), a statement
-- timeout, a connection limit.
--
-- Run as the database owner / admin after tally's migrations (they include
-- the histogram functions), in tally's database:
--   psql "$TALLY_DATABASE_URL" -v grafana_password="$TALLY_PG_GRAFANA_PASSWORD" -f readonly-role.sql
-- Options: -v grafana_role=NAME (default tally_grafana); without
-- grafana_password the role's password is left as it is. Idempotent; run it
-- again after a migration adds a table the dashboards read. On Azure Database
-- for PostgreSQL Flexible Server run it as the admin (a member of
-- azure_pg_admin), with password authentication enabled for this role.

\set ON_ERROR_STOP on
\if :{?grafana_role}
\else
\set grafana_role tally_grafana
\endif

SELECT format('CREATE ROLE %I LOGIN', :'grafana_role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'grafana_role')
\gexec

ALTER ROLE :"grafana_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION CONNECTION LIMIT 20;
\if :{?grafana_password}
ALTER ROLE :"grafana_role" PASSWORD :'grafana_password';
\endif
ALTER ROLE :"grafana_role" SET default_transaction_read_only = on;
ALTER ROLE :"grafana_role" SET statement_timeout = '30s';
ALTER ROLE :"grafana_role" SET idle_in_transaction_session_timeout = '60s';

SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'grafana_role')
\gexec
SELECT format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), :'grafana_role')
\gexec

-- The tables the dashboards read (partitioned tables: the grant on the parent
-- covers every partition tally creates later). Those not there yet are skipped.
SELECT format('GRANT SELECT ON TABLE %I TO %I', t, :'grafana_role')
FROM unnest(ARRAY[
    'tenants', 'rollup_windows', 'rollup_hours', 'rollup_days',
    'alert_instances', 'alert_outbox', 'alert_meta',
    'usage_events', 'usage_hourly', 'ingest_counts', 'lake_state',
    'usage_changes', 'stripe_customers', 'tenant_limits', 'credit_entries',
    'stripe_pushes', 'stripe_reconciliations'
]) AS t
WHERE to_regclass(quote_ident(current_schema()) || '.' || quote_ident(t)) IS NOT NULL
\gexec

-- Never the key hashes, even if granted earlier.
SELECT format('REVOKE ALL ON TABLE %I FROM %I', 'api_keys', :'grafana_role')
WHERE to_regclass(quote_ident(current_schema()) || '.api_keys') IS NOT NULL
\gexec

-- The histogram functions (EXECUTE is PUBLIC by default; explicit in case a
-- hardened server revoked it).
SELECT format('GRANT EXECUTE ON %s %s TO %I',
              CASE WHEN p.prokind = 'a' THEN 'ROUTINE' ELSE 'FUNCTION' END, p.oid::regprocedure, :'grafana_role')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = current_schema() AND p.proname LIKE 'tally\_hist\_%'
\gexec
