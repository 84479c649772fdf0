#!/usr/bin/env python3
"""Checks Azure Monitor Workbook templates (gallery-template JSON) offline.

    workbook_check.py FILE.workbook.json [...] [--json]

Rules (after microsoft/Application-Insights-Workbooks' workbook schema and
the checks of its scripts/src/Rules.ts best-practices analyzer):

* the file is at most 500 KB (over 100 KB is a warning) and is JSON with
  ``"version": "Notebook/1.0"`` and an ``items`` list;
* items are walked recursively (type 12 groups hold ``content.items``);
* every type-3 query item (``KqlItem/1.0``) has a non-empty ``query`` of at
  most 3000 characters, a ``queryType`` and a ``resourceType`` (or non-empty
  ``crossComponentResources``);
* at most 40 Logs queries (``queryType`` 0) in the workbook;
* every ``{Param}`` / ``{Param:format}`` referenced in queries, titles, text,
  cross-component resources and parameter queries, and every
  ``timeContextFromParameter``, names a parameter of some type-9 item (a
  built-in-looking ``{TimeRange}`` is accepted only when such a parameter exists);
* no hard-coded ``/subscriptions/<guid>`` resource id anywhere (Rules.ts
  RES000): resources come from parameters or the workbook's context.

Exit status 1 when any file has an error.
"""

from __future__ import annotations

import json
import re
import sys

MAX_BYTES = 500 * 1024
WARN_BYTES = 100 * 1024
MAX_LOGS_QUERIES = 40
MAX_QUERY_CHARS = 3000

SUBSCRIPTION_RE = re.compile(
    r"/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
)
# {Name} or {Name:format}; not JSON/KQL dynamic literals like {"a": 1}.
PARAM_REF_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^{}]*)?\}")


def walk_items(items, path="items"):
    """Yields (path, item) for every item, descending into type-12 groups."""
    for i, it in enumerate(items or []):
        p = f"{path}[{i}]"
        if not isinstance(it, dict):
            yield p, None
            continue
        yield p, it
        content = it.get("content") or {}
        if it.get("type") == 12 and isinstance(content, dict):
            yield from walk_items(content.get("items"), p + ".content.items")


def item_label(path: str, it: dict) -> str:
    name = it.get("name") if isinstance(it, dict) else None
    return f"{path}" + (f" ({name})" if name else "")


def check_workbook(text: str, size: int) -> tuple[list[str], list[str]]:
    """Returns (errors, warnings) for one template."""
    errors: list[str] = []
    warnings: list[str] = []
    if size > MAX_BYTES:
        errors.append(f"file is {size} bytes; the limit is {MAX_BYTES}")
    elif size > WARN_BYTES:
        warnings.append(f"file is {size} bytes (over {WARN_BYTES}: slow to load)")
    for m in SUBSCRIPTION_RE.finditer(text):
        errors.append(f"hard-coded resource id {m.group(0)!r}: take resources from a parameter or the workbook's context")
    try:
        wb = json.loads(text)
    except json.JSONDecodeError as e:
        errors.append(f"not JSON: {e}")
        return errors, warnings
    if not isinstance(wb, dict):
        errors.append("top level is not an object")
        return errors, warnings
    if wb.get("version") != "Notebook/1.0":
        errors.append(f'version is {wb.get("version")!r}, expected "Notebook/1.0"')
    if not isinstance(wb.get("items"), list):
        errors.append("no items list")
        return errors, warnings

    items = list(walk_items(wb["items"]))
    params: set[str] = set()
    for path, it in items:
        if it is None:
            errors.append(f"{path}: not an object")
            continue
        if it.get("type") == 9:
            for prm in (it.get("content") or {}).get("parameters") or []:
                if isinstance(prm, dict) and prm.get("name"):
                    params.add(prm["name"])

    logs_queries = 0
    refs: list[tuple[str, str]] = []  # (where, name)

    def scan(where: str, s) -> None:
        if isinstance(s, str):
            for m in PARAM_REF_RE.finditer(s):
                refs.append((where, m.group(1)))

    for path, it in items:
        if it is None:
            continue
        t = it.get("type")
        content = it.get("content")
        label = item_label(path, it)
        if not isinstance(content, dict):
            if t in (1, 3, 9, 10, 11, 12):
                errors.append(f"{label}: no content object")
            continue
        scan(label + " title", content.get("title"))
        scan(label + " noDataMessage", content.get("noDataMessage"))
        if t == 1:
            scan(label + " text", content.get("json"))
        elif t == 3:
            q = content.get("query")
            if not isinstance(q, str) or not q.strip():
                errors.append(f"{label}: query item without a query")
            else:
                if len(q) > MAX_QUERY_CHARS:
                    errors.append(f"{label}: query is {len(q)} characters; the limit is {MAX_QUERY_CHARS}")
                scan(label + " query", q)
            if "queryType" not in content:
                errors.append(f"{label}: query item without queryType (0 = Logs, 1 = Resource Graph, ...)")
            elif content.get("queryType") == 0:
                logs_queries += 1
            ccr = content.get("crossComponentResources")
            if not content.get("resourceType") and not (isinstance(ccr, list) and ccr):
                errors.append(f"{label}: query item without resourceType or crossComponentResources")
            for r in ccr or []:
                scan(label + " crossComponentResources", r)
            tcp = content.get("timeContextFromParameter")
            if tcp is not None and tcp not in params:
                errors.append(f"{label}: timeContextFromParameter {tcp!r} is not a parameter")
        elif t == 9:
            for prm in content.get("parameters") or []:
                if isinstance(prm, dict):
                    where = f"{label} parameter {prm.get('name')!r}"
                    scan(where + " query", prm.get("query"))
                    scan(where + " label", prm.get("label"))
                    for r in prm.get("crossComponentResources") or []:
                        scan(where + " crossComponentResources", r)
        elif t == 12:
            pass
    if logs_queries > MAX_LOGS_QUERIES:
        errors.append(f"{logs_queries} Logs queries; the limit is {MAX_LOGS_QUERIES}")
    for where, name in refs:
        if name not in params:
            errors.append(f"{where}: {{{name}}} is not a parameter of the workbook")
    return errors, warnings


def check_file(path: str) -> dict:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return {"file": path, "errors": [f"not UTF-8: {e}"], "warnings": []}
    errors, warnings = check_workbook(text, len(raw))
    return {"file": path, "errors": errors, "warnings": warnings}


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    files = [a for a in args if a != "--json"]
    if not files:
        print("usage: workbook_check.py FILE.workbook.json [...] [--json]", file=sys.stderr)
        return 2
    reports = [check_file(f) for f in files]
    if as_json:
        print(json.dumps(reports, indent=2))
    else:
        for r in reports:
            print(("FAIL " if r["errors"] else "ok   ") + r["file"])
            for e in r["errors"]:
                print("  error: " + e)
            for w in r["warnings"]:
                print("  warning: " + w)
    return 1 if any(r["errors"] for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
