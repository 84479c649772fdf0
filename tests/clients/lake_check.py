#!/usr/bin/env python3
"""Reads tally's Parquet lake with tools that share nothing with tally:
pyarrow (straight from Azurite through its AzureFileSystem, or from a local
directory) and DuckDB (`read_parquet(..., hive_partitioning=true)` over a
local copy). Prints one JSON object of facts for the Rust test to compare
with what it sent.

  lake_check.py create-container --port P --container C
  lake_check.py read --dir D
  lake_check.py read --port P --container C [--prefix X]
"""

import argparse
import json
import os
import sys
import tempfile

import datetime

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite(port):
    authority = f"127.0.0.1:{port}"
    return pafs.AzureFileSystem(
        account_name=AZURITE_ACCOUNT, account_key=AZURITE_KEY,
        blob_storage_authority=authority, blob_storage_scheme="http",
        dfs_storage_authority=authority, dfs_storage_scheme="http",
    )


def utc(ns):
    return datetime.datetime.fromtimestamp(ns // 1_000_000_000, tz=datetime.timezone.utc)


def files_under(fs, root):
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def facts_pyarrow(fs, root, signal):
    base = f"{root}/{signal}"
    if not files_under(fs, base):
        return None
    t = ds.dataset(base, filesystem=fs, format="parquet", partitioning="hive").to_table()
    # Nanosecond timestamps as integers (datetime has microseconds only).
    for i, field in enumerate(t.schema):
        if pa.types.is_timestamp(field.type):
            t = t.set_column(i, field.name, t[field.name].cast(pa.int64()))
    rows = t.to_pylist()
    out = {"rows": len(rows), "columns": t.column_names}
    by_tenant = {}
    for r in rows:
        by_tenant[r["tenant"]] = by_tenant.get(r["tenant"], 0) + 1
    out["by_tenant"] = by_tenant
    if signal == "spans":
        out["names"] = sorted({r["name"] for r in rows})
        out["kinds"] = sorted({r["kind"] for r in rows})
        attrs = [dict(r["attributes"] or []) for r in rows]
        out["indexes"] = sorted(int(a["tally.test.index"]) for a in attrs if "tally.test.index" in a)
        out["services"] = sorted({dict(r["resource_attributes"]).get("service.name") for r in rows})
        out["with_events"] = sum(1 for r in rows if r["events"] and "rows.fetched" in r["events"])
        out["roots_ok"] = sum(1 for r in rows if r["kind"] == "server" and r["status_code"] == "ok")
        out["null_ids"] = sum(1 for r in rows if r["trace_id"] is None or r["span_id"] is None)
        # The partition columns agree with the data.
        out["partition_mismatch"] = sum(
            1 for r in rows
            if utc(r["start_time"]).strftime("%Y-%m-%d") != str(r["date"]) or utc(r["start_time"]).strftime("%H") != f"{int(r['hour']):02d}"
        )
    elif signal == "logs":
        out["bodies"] = sorted(r["body"] for r in rows)
        out["severities"] = sorted({r["severity_text"] for r in rows})
    elif signal == "metrics":
        out["names"] = sorted({r["name"] for r in rows})
        out["types"] = sorted({f"{r['type']}/{r['temporality']}" for r in rows})
        out["values"] = sorted(r["value"] for r in rows if r["value"] is not None)
    return out


def facts_duckdb(local_root, signal):
    pattern = os.path.join(local_root, signal, "**", "*.parquet")
    con = duckdb.connect()
    q = f"FROM read_parquet('{pattern}', hive_partitioning=true)"
    n = con.execute(f"SELECT count(*) {q}").fetchone()[0]
    tenants = dict(con.execute(f"SELECT tenant, count(*) {q} GROUP BY tenant").fetchall())
    out = {"rows": n, "by_tenant": tenants}
    if signal == "spans":
        out["max_hex_trace_id_len"] = con.execute(f"SELECT max(length(hex(trace_id))) {q}").fetchone()[0]
        out["routes"] = con.execute(f"SELECT count(*) {q} WHERE attributes['tally.test.index'] IS NOT NULL").fetchone()[0]
        out["durations_positive"] = con.execute(f"SELECT count(*) {q} WHERE duration_ns >= 0").fetchone()[0]
    return out


def read(args):
    signals = ["spans", "logs", "metrics", "usage"]
    if args.dir:
        fs, root = pafs.LocalFileSystem(), os.path.abspath(args.dir)
    else:
        fs = azurite(args.port)
        root = args.container + (f"/{args.prefix.strip('/')}" if args.prefix else "")
    files = files_under(fs, root)
    result = {"files": [f[len(root) + 1:] for f in files], "pyarrow": {}, "duckdb": {}}
    with tempfile.TemporaryDirectory() as tmp:
        local_root = root
        if not args.dir:
            # DuckDB reads a local copy (its Azure extension would need the internet).
            local_root = tmp
            for f in files:
                dest = os.path.join(tmp, f[len(root) + 1:])
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with fs.open_input_stream(f) as src, open(dest, "wb") as out:
                    out.write(src.read())
        for s in signals:
            p = facts_pyarrow(fs, root, s)
            if p is not None:
                result["pyarrow"][s] = p
                result["duckdb"][s] = facts_duckdb(local_root, s)
    print(json.dumps(result, default=str))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create-container")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--container", required=True)
    r = sub.add_parser("read")
    r.add_argument("--dir")
    r.add_argument("--port", type=int)
    r.add_argument("--container")
    r.add_argument("--prefix", default="")
    args = ap.parse_args()
    if args.cmd == "create-container":
        azurite(args.port).create_dir(args.container)
        print(json.dumps({"created": args.container}))
    else:
        read(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
