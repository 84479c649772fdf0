-- Runs once, when the postgres-data volume is first initialised
-- (docker-entrypoint-initdb.d). tally connects as "tally", the database's
-- owner, and creates its tables with `migrate` at start-up. Grafana reads
-- as tally_grafana, which may only SELECT (Grafana runs whatever SQL a
-- dashboard holds).
CREATE ROLE tally_grafana LOGIN;
GRANT CONNECT ON DATABASE tally TO tally_grafana;
GRANT USAGE ON SCHEMA public TO tally_grafana;
ALTER DEFAULT PRIVILEGES FOR ROLE tally IN SCHEMA public GRANT SELECT ON TABLES TO tally_grafana;
