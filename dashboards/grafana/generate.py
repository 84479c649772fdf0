#!/usr/bin/env python3
"""Writes tally's Grafana dashboards (Classic JSON, schemaVersion 41) into
dashboards/grafana/dashboards/. The JSON files are committed; this script is
their source, so the SQL that every rollup panel shares is written once.

    python3 dashboards/grafana/generate.py          # (re)write the files
    python3 dashboards/grafana/generate.py --check  # exit 1 if a file is stale

Editing a dashboard in the Grafana UI and exporting it is fine too: then port
the change here (or stop generating that file).

SQL conventions (see dashboards/README.md):

* every time predicate on an epoch-ms BIGINT column is
  ``col >= $__unixEpochFrom()::bigint*1000 AND col < $__unixEpochTo()::bigint*1000``
  (backend macros, bare column: partition pruning and index use);
* rollups are read from rollup_windows, rollup_hours AND rollup_days with
  UNION ALL: tally's downsampling *moves* rows (windows older than 7 days
  become hours, hours older than 90 days become days), so each period lives
  in exactly one table and a range reaching past 7 days needs all three. Each
  branch buckets by ``step_ms = greatest($__interval_ms, <table resolution>)``
  and rates divide by that step, so hour rows are never squeezed into
  1-minute buckets;
* buckets are ``(start_ms / step_ms) * step_ms AS "time"`` (a bigint of epoch
  ms; Grafana reads e+12 numbers as ms), panels' min interval is 1m (the
  windows' resolution), time series end with ``ORDER BY 1`` (``1, 2`` when a
  string column makes them long);
* string variables are always ``${var:sqlstring}``; no custom allValue;
* every panel uses ``{"type": "grafana-postgresql-datasource", "uid": "${ds}"}``.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from billing_dashboards import usage_billing  # noqa: E402
from panels import OUT  # noqa: E402
from sql_dashboards import alerts, service_slos, tenant_overview  # noqa: E402
from tally_self import tally_self  # noqa: E402


DASHBOARDS = {
    "tenant-overview.json": tenant_overview,
    "service-slos.json": service_slos,
    "alerts.json": alerts,
    "usage-billing.json": usage_billing,
    "tally-self.json": tally_self,
}


def render(d: dict) -> str:
    return json.dumps(d, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    os.makedirs(OUT, exist_ok=True)
    for name, build in DASHBOARDS.items():
        path = os.path.join(OUT, name)
        text = render(build())
        if check:
            try:
                with open(path, encoding="utf-8") as f:
                    if f.read() != text:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        print("stale (run dashboards/grafana/generate.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
