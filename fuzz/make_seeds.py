#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from
real captures in the repository. Standard library only; run from anywhere:

    python3 fuzz/make_seeds.py          # (re)writes fuzz/corpus/
    python3 fuzz/make_seeds.py --check  # only checks the protobuf encoder

Sources:
- tests/data/appinsights/reference_capture.json: the OTLP/HTTP protobuf
  bodies the OpenTelemetry Python SDK 1.45.2 sent (traces, logs, two metric
  exports), its connection string, and the same bodies as OTLP/JSON
  (MessageToDict: enum names, which OTLP/JSON does not allow, are turned
  into their numbers here).
- tests/clients/sample_node_traces.json: an OTLP/JSON trace export of the
  Node SDK; also encoded to protobuf with the small encoder below, which is
  first checked to reproduce the Python SDK's protobuf bytes exactly from
  their JSON form.
- tests/it (Stripe events, CloudEvents as tally's tests and load generator
  send them), tally.default.toml, core/src/histogram.rs (the HdrHistogram V2
  layout, re-implemented as in dashboards/check/test_hist_functions.py).

gzip seeds use Python's gzip module; zstd seeds the `zstd` command (skipped
with a note if it is missing).
"""

import base64
import copy
import gzip
import hashlib
import hmac
import json
import os
import shutil
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")

# --- a minimal OTLP protobuf encoder (opentelemetry-proto v1) ---------------

# field name (OTLP/JSON spelling) -> (number, kind[, message type])
# kinds: str, bytes (hex in JSON), b64 (base64 in JSON), u32, i32, enum, u64
# (varint), f64 (fixed64), sf64 (sfixed64), f32 (fixed32), dbl, bool, si32
# (sint32), msg, and rep_* for repeated (numbers packed).
KV = ("msg", "KeyValue")
SCHEMA = {
    "AnyValue": {
        "stringValue": (1, "str"), "boolValue": (2, "bool"), "intValue": (3, "i64"),
        "doubleValue": (4, "dbl"), "arrayValue": (5, "msg", "ArrayValue"),
        "kvlistValue": (6, "msg", "KeyValueList"), "bytesValue": (7, "b64"),
    },
    "ArrayValue": {"values": (1, "rep_msg", "AnyValue")},
    "KeyValueList": {"values": (1, "rep_msg", "KeyValue")},
    "KeyValue": {"key": (1, "str"), "value": (2, "msg", "AnyValue")},
    "Scope": {
        "name": (1, "str"), "version": (2, "str"), "attributes": (3, "rep_msg", "KeyValue"),
        "droppedAttributesCount": (4, "u32"),
    },
    "EntityRef": {"schemaUrl": (1, "str"), "type": (2, "str"), "idKeys": (3, "rep_str"), "descriptionKeys": (4, "rep_str")},
    "Resource": {
        "attributes": (1, "rep_msg", "KeyValue"), "droppedAttributesCount": (2, "u32"),
        "entityRefs": (3, "rep_msg", "EntityRef"),
    },
    # traces
    "TraceRequest": {"resourceSpans": (1, "rep_msg", "ResourceSpans")},
    "ResourceSpans": {"resource": (1, "msg", "Resource"), "scopeSpans": (2, "rep_msg", "ScopeSpans"), "schemaUrl": (3, "str")},
    "ScopeSpans": {"scope": (1, "msg", "Scope"), "spans": (2, "rep_msg", "Span"), "schemaUrl": (3, "str")},
    "Span": {
        "traceId": (1, "bytes"), "spanId": (2, "bytes"), "traceState": (3, "str"), "parentSpanId": (4, "bytes"),
        "flags": (16, "f32"), "name": (5, "str"), "kind": (6, "enum"), "startTimeUnixNano": (7, "f64"),
        "endTimeUnixNano": (8, "f64"), "attributes": (9, "rep_msg", "KeyValue"), "droppedAttributesCount": (10, "u32"),
        "events": (11, "rep_msg", "Event"), "droppedEventsCount": (12, "u32"), "links": (13, "rep_msg", "Link"),
        "droppedLinksCount": (14, "u32"), "status": (15, "msg", "Status"),
    },
    "Event": {
        "timeUnixNano": (1, "f64"), "name": (2, "str"), "attributes": (3, "rep_msg", "KeyValue"),
        "droppedAttributesCount": (4, "u32"),
    },
    "Link": {
        "traceId": (1, "bytes"), "spanId": (2, "bytes"), "traceState": (3, "str"), "attributes": (4, "rep_msg", "KeyValue"),
        "droppedAttributesCount": (5, "u32"), "flags": (6, "f32"),
    },
    "Status": {"message": (2, "str"), "code": (3, "enum")},
    # logs
    "LogsRequest": {"resourceLogs": (1, "rep_msg", "ResourceLogs")},
    "ResourceLogs": {"resource": (1, "msg", "Resource"), "scopeLogs": (2, "rep_msg", "ScopeLogs"), "schemaUrl": (3, "str")},
    "ScopeLogs": {"scope": (1, "msg", "Scope"), "logRecords": (2, "rep_msg", "LogRecord"), "schemaUrl": (3, "str")},
    "LogRecord": {
        "timeUnixNano": (1, "f64"), "observedTimeUnixNano": (11, "f64"), "severityNumber": (2, "enum"),
        "severityText": (3, "str"), "body": (5, "msg", "AnyValue"), "attributes": (6, "rep_msg", "KeyValue"),
        "droppedAttributesCount": (7, "u32"), "flags": (8, "f32"), "traceId": (9, "bytes"), "spanId": (10, "bytes"),
        "eventName": (12, "str"),
    },
    # metrics
    "MetricsRequest": {"resourceMetrics": (1, "rep_msg", "ResourceMetrics")},
    "ResourceMetrics": {
        "resource": (1, "msg", "Resource"), "scopeMetrics": (2, "rep_msg", "ScopeMetrics"), "schemaUrl": (3, "str"),
    },
    "ScopeMetrics": {"scope": (1, "msg", "Scope"), "metrics": (2, "rep_msg", "Metric"), "schemaUrl": (3, "str")},
    "Metric": {
        "name": (1, "str"), "description": (2, "str"), "unit": (3, "str"), "gauge": (5, "msg", "Gauge"),
        "sum": (7, "msg", "Sum"), "histogram": (9, "msg", "Histogram"),
        "exponentialHistogram": (10, "msg", "ExpHistogram"), "summary": (11, "msg", "Summary"),
        "metadata": (12, "rep_msg", "KeyValue"),
    },
    "Gauge": {"dataPoints": (1, "rep_msg", "NumberPoint")},
    "Sum": {"dataPoints": (1, "rep_msg", "NumberPoint"), "aggregationTemporality": (2, "enum"), "isMonotonic": (3, "bool")},
    "Histogram": {"dataPoints": (1, "rep_msg", "HistogramPoint"), "aggregationTemporality": (2, "enum")},
    "ExpHistogram": {"dataPoints": (1, "rep_msg", "ExpHistogramPoint"), "aggregationTemporality": (2, "enum")},
    "Summary": {"dataPoints": (1, "rep_msg", "SummaryPoint")},
    "NumberPoint": {
        "attributes": (7, "rep_msg", "KeyValue"), "startTimeUnixNano": (2, "f64"), "timeUnixNano": (3, "f64"),
        "asDouble": (4, "dbl!"), "asInt": (6, "sf64!"), "exemplars": (5, "rep_msg", "Exemplar"), "flags": (8, "u32"),
    },
    "HistogramPoint": {
        "attributes": (9, "rep_msg", "KeyValue"), "startTimeUnixNano": (2, "f64"), "timeUnixNano": (3, "f64"),
        "count": (4, "f64"), "sum": (5, "dbl!"), "bucketCounts": (6, "rep_f64"), "explicitBounds": (7, "rep_dbl"),
        "exemplars": (8, "rep_msg", "Exemplar"), "flags": (10, "u32"), "min": (11, "dbl!"), "max": (12, "dbl!"),
    },
    "ExpHistogramPoint": {
        "attributes": (1, "rep_msg", "KeyValue"), "startTimeUnixNano": (2, "f64"), "timeUnixNano": (3, "f64"),
        "count": (4, "f64"), "sum": (5, "dbl!"), "scale": (6, "si32"), "zeroCount": (7, "f64"),
        "positive": (8, "msg", "Buckets"), "negative": (9, "msg", "Buckets"), "flags": (10, "u32"),
        "exemplars": (11, "rep_msg", "Exemplar"), "min": (12, "dbl!"), "max": (13, "dbl!"), "zeroThreshold": (14, "dbl"),
    },
    "Buckets": {"offset": (1, "si32"), "bucketCounts": (2, "rep_u64")},
    "SummaryPoint": {
        "attributes": (7, "rep_msg", "KeyValue"), "startTimeUnixNano": (2, "f64"), "timeUnixNano": (3, "f64"),
        "count": (4, "f64"), "sum": (5, "dbl"), "quantileValues": (6, "rep_msg", "Quantile"), "flags": (8, "u32"),
    },
    "Quantile": {"quantile": (1, "dbl"), "value": (2, "dbl")},
    "Exemplar": {
        "filteredAttributes": (7, "rep_msg", "KeyValue"), "timeUnixNano": (2, "f64"), "asDouble": (3, "dbl!"),
        "asInt": (6, "sf64!"), "spanId": (4, "bytes"), "traceId": (5, "bytes"),
    },
}

ENUMS = {
    "kind": {f"SPAN_KIND_{n}": i for i, n in enumerate(["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"])},
    "code": {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2},
    "aggregationTemporality": {
        "AGGREGATION_TEMPORALITY_UNSPECIFIED": 0, "AGGREGATION_TEMPORALITY_DELTA": 1, "AGGREGATION_TEMPORALITY_CUMULATIVE": 2,
    },
    "severityNumber": {
        f"SEVERITY_NUMBER_{n}": i
        for i, n in enumerate(
            ["UNSPECIFIED"]
            + [f"{lvl}{s}" for lvl in ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"] for s in ["", "2", "3", "4"]]
        )
    },
}


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def key(num, wire):
    return varint(num << 3 | wire)


def ld(num, payload):
    return key(num, 2) + varint(len(payload)) + payload


def as_int(v):
    return int(v)


def as_float(v):
    return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.get(v, v) if isinstance(v, str) else float(v)


def enum_value(name, v):
    return ENUMS[name][v] if isinstance(v, str) else int(v)


def encode(msg_type, obj):
    """Fields in number order; proto3 defaults left out except for oneof
    members and `optional` fields (kinds ending in `!`), like the Python
    protobuf runtime."""
    fields = SCHEMA[msg_type]
    for k in obj:
        if k not in fields:
            raise KeyError(f"{msg_type}.{k}")
    out = bytearray()
    for name, spec in sorted(fields.items(), key=lambda kv: kv[1][0]):
        if name not in obj:
            continue
        v = obj[name]
        num, kind = spec[0], spec[1]
        present = kind.endswith("!") or msg_type == "AnyValue"
        kind = kind.rstrip("!")
        if kind == "msg":
            out += ld(num, encode(spec[2], v))
        elif kind == "rep_msg":
            for e in v:
                out += ld(num, encode(spec[2], e))
        elif kind == "rep_str":
            for e in v:
                out += ld(num, e.encode())
        elif kind in ("rep_f64", "rep_dbl", "rep_u64"):
            if not v:
                continue
            if kind == "rep_f64":
                payload = b"".join(struct.pack("<Q", as_int(e)) for e in v)
            elif kind == "rep_dbl":
                payload = b"".join(struct.pack("<d", as_float(e)) for e in v)
            else:
                payload = b"".join(varint(as_int(e)) for e in v)
            out += ld(num, payload)
        elif kind == "str":
            if v or present:
                out += ld(num, v.encode())
        elif kind in ("bytes", "b64"):
            b = bytes.fromhex(v) if kind == "bytes" else base64.b64decode(v)
            if b or present:
                out += ld(num, b)
        elif kind in ("u32", "u64", "i64", "enum", "bool", "i32"):
            n = enum_value(name, v) if kind == "enum" else (int(v) if kind != "bool" else int(bool(v)))
            if n or present:
                out += key(num, 0) + varint(n)
        elif kind == "si32":
            n = int(v)
            if n or present:
                out += key(num, 0) + varint((n << 1) ^ (n >> 31))
        elif kind in ("f64", "sf64"):
            n = as_int(v)
            if n or present:
                out += key(num, 1) + struct.pack("<Q" if kind == "f64" else "<q", n)
        elif kind == "f32":
            n = as_int(v)
            if n or present:
                out += key(num, 5) + struct.pack("<I", n)
        elif kind == "dbl":
            f = as_float(v)
            if f != 0.0 or present:
                out += key(num, 1) + struct.pack("<d", f)
        else:
            raise ValueError(kind)
    return bytes(out)


def numeric_enums(node):
    """MessageToDict writes enum names; OTLP/JSON wants their numbers."""
    if isinstance(node, dict):
        return {k: (ENUMS[k][v] if k in ENUMS and isinstance(v, str) and v in ENUMS[k] else numeric_enums(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [numeric_enums(v) for v in node]
    return node


ROOTS = {"traces": "TraceRequest", "logs": "LogsRequest", "metrics": "MetricsRequest"}


def load_capture():
    with open(os.path.join(ROOT, "tests", "data", "appinsights", "reference_capture.json"), encoding="utf-8") as fh:
        return json.load(fh)


def check_encoder(capture):
    """The encoder must give the Python SDK's bytes back from their JSON form."""
    for signal, root in ROOTS.items():
        for raw, as_json in zip(capture["otlp"][signal], capture["otlp_json"][signal]):
            want = base64.b64decode(raw)
            got = encode(root, numeric_enums(as_json))
            if got != want:
                raise SystemExit(f"make_seeds: the protobuf encoder does not reproduce the captured {signal} body")
    print("make_seeds: encoder reproduces the captured protobuf bodies byte for byte")


# --- HdrHistogram V2, as core/src/histogram.rs writes it ---------------------

MAX_VALUE = (1 << 40) - 1
MAX_COUNT = 1 << 62


def index_of(v):
    v = min(v, MAX_VALUE)
    if v < 256:
        return v
    shift = v.bit_length() - 1 - 7
    return (shift + 1) * 128 + (v >> shift) - 128


def zigzag(n):
    return ((n << 1) ^ (n >> 63)) & ((1 << 64) - 1)


def hdr_encode(buckets, highest=MAX_VALUE, cookie=0x1C849313):
    """buckets: {index: count}."""
    payload = bytearray()
    nxt = 0
    for index in sorted(buckets):
        gap = index - nxt
        if gap == 1:
            payload += varint(0)
        elif gap > 1:
            payload += varint(zigzag(-gap))
        payload += varint(zigzag(buckets[index]))
        nxt = index + 1
    header = struct.pack(">IIII", cookie, len(payload), 0, 2) + struct.pack(">QQd", 1, highest, 1.0)
    return header + bytes(payload)


def hdr_record(values):
    b = {}
    for v, n in values:
        i = index_of(v)
        b[i] = min(b.get(i, 0) + n, MAX_COUNT)
    return b


# --- writing -----------------------------------------------------------------


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    assert len(data) < 64 * 1024, (target, name, len(data))
    with open(os.path.join(d, name), "wb") as fh:
        fh.write(data)


def zstd(data):
    if not shutil.which("zstd"):
        return None
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, stdout=subprocess.PIPE, check=True).stdout


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def main():
    capture = load_capture()
    check_encoder(capture)
    if "--check" in sys.argv:
        return
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)

    with open(os.path.join(ROOT, "tests", "clients", "sample_node_traces.json"), encoding="utf-8") as fh:
        node_traces = json.load(fh)

    bodies = {}  # signal -> [(name, protobuf)]
    for signal in ROOTS:
        for i, raw in enumerate(capture["otlp"][signal]):
            bodies.setdefault(signal, []).append((f"python_sdk_{signal}_{i}.pb", base64.b64decode(raw)))
    bodies["traces"].append(("node_sdk_traces.pb", encode("TraceRequest", node_traces)))

    # Shapes the SDK captures do not hold: a summary, exemplars, a link,
    # entity refs, a kvlist/array/bytes log body, an empty request.
    extra_metrics = {
        "resourceMetrics": [{
            "resource": {
                "attributes": [{"key": "tenant.id", "value": {"stringValue": "acme"}}],
                "entityRefs": [{"type": "service", "idKeys": ["service.name"], "descriptionKeys": ["service.version"]}],
            },
            "scopeMetrics": [{
                "scope": {"name": "fuzz-seed", "version": "1"},
                "metrics": [
                    {"name": "rpc.duration", "unit": "ms", "summary": {"dataPoints": [{
                        "timeUnixNano": "1767268800000000000", "count": "4", "sum": 10.5,
                        "quantileValues": [{"quantile": 0.5, "value": 2.0}, {"quantile": 1.0, "value": 5.0}],
                        "attributes": [{"key": "rpc.method", "value": {"stringValue": "Reserve"}}]}]}},
                    {"name": "orders.placed", "sum": {"aggregationTemporality": 1, "isMonotonic": True, "dataPoints": [{
                        "timeUnixNano": "1767268800000000000", "asInt": "3",
                        "attributes": [{"key": "plan", "value": {"stringValue": "pro"}}],
                        "exemplars": [{"timeUnixNano": "1767268800000000000", "asInt": "1",
                                       "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                                       "filteredAttributes": [{"key": "user", "value": {"stringValue": "u1"}}]}]}]}},
                    {"name": "queue.depth", "gauge": {"dataPoints": [{"timeUnixNano": "1767268800000000000", "asDouble": 42.5}]},
                     "metadata": [{"key": "source", "value": {"stringValue": "seed"}}]},
                ],
            }],
        }]
    }
    extra_logs = {
        "resourceLogs": [{
            "resource": {"attributes": [{"key": "tenant.id", "value": {"stringValue": "acme"}}]},
            "scopeLogs": [{"scope": {"name": "fuzz-seed"}, "logRecords": [{
                "timeUnixNano": "1767268800000000000", "severityNumber": 9, "severityText": "INFO", "eventName": "order.placed",
                "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "flags": 1,
                "body": {"kvlistValue": {"values": [
                    {"key": "items", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"doubleValue": 2.5}, {"boolValue": True}]}}},
                    {"key": "blob", "value": {"bytesValue": base64.b64encode(b"\x00\x01tally").decode()}},
                ]}},
                "attributes": [{"key": "lines", "value": {"intValue": "12"}}, {"key": "plan", "value": {"stringValue": "pro"}}],
            }]}],
        }]
    }
    extra_traces = {
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "tenant.id", "value": {"stringValue": "acme"}}]},
            "scopeSpans": [{"scope": {"name": "fuzz-seed"}, "spans": [{
                "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "chat gpt-4o",
                "traceState": "ot=th:c", "kind": 3, "startTimeUnixNano": "1767268800000000000",
                "endTimeUnixNano": "1767268801000000000", "flags": 257,
                "attributes": [{"key": "rows", "value": {"intValue": "120"}},
                               {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                               {"key": "sampling.probability", "value": {"doubleValue": 0.25}}],
                "events": [{"timeUnixNano": "1767268800500000000", "name": "retry"}],
                "links": [{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "flags": 1}],
                "status": {"code": 2, "message": "rate limited"},
            }]}],
        }]
    }
    bodies["metrics"].append(("shapes_metrics.pb", encode("MetricsRequest", extra_metrics)))
    bodies["logs"].append(("shapes_logs.pb", encode("LogsRequest", extra_logs)))
    bodies["traces"].append(("shapes_traces.pb", encode("TraceRequest", extra_traces)))

    for signal, target in [("traces", "otlp_traces_proto"), ("logs", "otlp_logs_proto"), ("metrics", "otlp_metrics_proto")]:
        for name, body in bodies[signal]:
            write(target, name, body)
        write(target, "empty.pb", b"")

    # OTLP/JSON: the Node SDK sample as sent, the Python bodies as JSON.
    with open(os.path.join(ROOT, "tests", "clients", "sample_node_traces.json"), "rb") as fh:
        write("otlp_json", "node_sdk_traces.json", fh.read())
    for signal in ROOTS:
        for i, as_json in enumerate(capture["otlp_json"][signal]):
            write("otlp_json", f"python_sdk_{signal}_{i}.json", compact(numeric_enums(as_json)))
    write("otlp_json", "shapes_metrics.json", compact(extra_metrics))
    write("otlp_json", "shapes_logs.json", compact(extra_logs))
    write("otlp_json", "shapes_traces.json", compact(extra_traces))
    write("otlp_json", "empty_object.json", "{}")
    write("otlp_json", "empty_list.json", '{"resourceLogs":[]}')

    # decompress: first byte = encoding (low 2 bits: 0 identity, 1 gzip,
    # 2 zstd, 3 gzip) and limit (upper 6 bits, see fuzz/src/lib.rs), then
    # the body. 0x1c: limit index 7 (the production 8 MiB).
    note = None
    for signal in ROOTS:
        name, body = bodies[signal][0]
        stem = name.rsplit(".", 1)[0]
        write("decompress", f"{stem}.gzip", bytes([0x1C | 1]) + gzip.compress(body, mtime=0))
        z = zstd(body)
        if z is None:
            note = "zstd not found: no zstd seeds"
        else:
            write("decompress", f"{stem}.zstd", bytes([0x1C | 2]) + z)
        write("decompress", f"{stem}.identity", bytes([0x1C | 0]) + body)
    # A small bomb: 1 MiB of zeros, decompressed under a 4 KiB limit (index 2).
    zeros = bytes(1 << 20)
    write("decompress", "bomb_1mib.gzip", bytes([(2 << 2) | 1]) + gzip.compress(zeros, 9, mtime=0))
    z = zstd(zeros)
    if z is not None:
        write("decompress", "bomb_1mib.zstd", bytes([(2 << 2) | 2]) + z)
    # Two gzip members (the decoder reads them all).
    write("decompress", "two_members.gzip", bytes([0x1C | 1]) + gzip.compress(b"{}", mtime=0) + gzip.compress(b" ", mtime=0))
    if note:
        print(f"make_seeds: {note}")

    # CloudEvents: what the load generator and tally's tests send.
    event = {"specversion": "1.0", "id": "e1", "source": "svc", "type": "llm.completion", "subject": "acme",
             "time": "2026-11-01T10:00:00Z", "data": {"tokens": 120, "model": "gpt-4o"}}
    write("cloudevents", "one.json", compact(event))
    batch = []
    for k in range(3):
        e = dict(event, id=f"loadgen-0-{k}", source="loadgen", subject=f"tenant-{k}", data={"tokens": 100 + 13 * k, "model": f"model-{k % 3}"})
        batch.append(e)
    batch.append({"specversion": "1.0", "id": "l1", "source": "web", "type": "login", "subject": "acme", "data": {"user": 42}})
    batch.append({"specversion": "1.0", "id": "s1", "source": "storage", "type": "storage.sample", "subject": "acme",
                  "time": "2026-11-06T15:59:00.123+01:00",
                  "data": {"usage": {"gb": 1.5}, "region": "eu", "items": [{"sku": "hot"}]}})
    batch.append(dict(event, id="bad", data={"tokens": -1}))
    write("cloudevents", "batch.json", compact(batch))
    write("cloudevents", "pretty.json", json.dumps(event, indent=2))

    # Stripe: header line, secret line, body (see fuzz/src/lib.rs).
    secret = "whsec_test_secret"
    now = 1_767_268_800
    stripe_events = [
        {"id": "evt_1", "object": "event", "type": "customer.subscription.updated", "created": now,
         "api_version": "2025-09-30.clover", "livemode": False,
         "data": {"object": {"id": "sub_Life1", "object": "subscription", "customer": "cus_Life1", "status": "active",
                             "metadata": {"tenant_id": "lifeco"},
                             "items": {"object": "list", "data": [{"current_period_start": now, "current_period_end": now + 30 * 86400}]}}}},
        {"id": "evt_2", "object": "event", "type": "invoice.payment_failed", "created": now,
         "data": {"object": {"id": "in_1", "object": "invoice", "customer": "cus_Life1",
                             "parent": {"subscription_details": {"subscription": "sub_Life1", "metadata": {"tenant_id": "lifeco"}}}}}},
        {"id": "evt_3", "type": "customer.subscription.created", "created": 10,
         "data": {"object": {"id": "sub_1", "customer": {"id": "cus_A"}, "status": "trialing", "metadata": {},
                             "current_period_start": 100, "current_period_end": 200}}},
        {"id": "evt_4", "type": "customer.updated", "created": now, "data": {"object": {"id": "cus_B", "metadata": {"tenant_id": "acme"}}}},
        {"id": "evt_5", "type": "charge.refunded", "created": now, "data": {"object": {}}},
    ]
    for i, ev in enumerate(stripe_events):
        body = compact(ev).encode()
        sig = hmac.new(secret.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
        header = f"t={now},v1={sig}"
        if i == 1:
            header = f"t={now},v1={'ab' * 32},v1={sig},v0=deadbeef"
        write("stripe_webhook", f"{ev['type']}.txt", f"{header}\n{secret}\n".encode() + body)

    # Application Insights connection strings: the capture's, and the forms
    # Microsoft documents.
    ikey = "00000000-0000-0000-0000-000000000000"
    for name, cs in [
        ("capture", capture["connection_string"]),
        ("azure_public", f"InstrumentationKey={ikey};IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/;"
                         "LiveEndpoint=https://westeurope.livediagnostics.monitor.azure.com/;ApplicationId=1234"),
        ("sovereign", f" ;instrumentationkey = {ikey.upper()} ;EndpointSuffix=applicationinsights.azure.cn;Location=chinaeast2;"
                      "AADAudience=https://monitor.azure.cn/;Authorization=ikey"),
        ("ikey_only", f"InstrumentationKey={ikey}"),
    ]:
        write("appinsights_connection_string", f"{name}.txt", cs)

    # Config: the defaults file, and snippets from the README and tests.
    with open(os.path.join(ROOT, "tally.default.toml"), "rb") as fh:
        defaults = fh.read()
    write("config_toml", "tally.default.toml", defaults)
    write("config_toml", "meters.toml", (
        '[[meters]]\nname = "llm_tokens"\naggregation = "sum"\nevent_type = "llm.completion"\nvalue = "$.tokens"\n'
        'group_by = { model = "$.model" }\n\n'
        '[[meters]]\nname = "rows"\naggregation = "sum"\nspan_attribute = "rows"\nscale_sampled = true\n\n'
        '[[receivers]]\nname = "oncall"\ntype = "webhook"\nurl = "https://oncall.example.com/hook"\n\n'
        '[[alerts]]\nname = "E"\nmetric = "error_rate"\nwarning = 0.01\nreceivers = ["oncall"]\n'
    ))
    write("config_toml", "overrides.toml", (
        'log_format = "json"\ndatabase_url = "postgres://u:hunter2@db:5432/t?sslmode=require"\n'
        '[otlp]\nmax_request_bytes = 1048576\n[tenancy]\ndefault_tenant = "shared"\nhost_pattern = "{tenant}.example.com"\n'
        'host_attributes = ["host.name"]\n'
    ))

    # HdrHistogram V2 blobs: one histogram, or two back to back (merged by
    # the target).
    latencies = hdr_record([(v, 1) for v in [1, 2, 300, 300, 5_000, 77_777, 1_000_000, 3_600_000_000]])
    write("hdr_histogram", "latencies.hdr", hdr_encode(latencies))
    write("hdr_histogram", "empty.hdr", hdr_encode({}))
    saturated = hdr_record([(10, MAX_COUNT), (20, 1), (MAX_VALUE, 3)])
    write("hdr_histogram", "two.hdr", hdr_encode(latencies) + hdr_encode(saturated))
    # As the Java/Rust HdrHistogram libraries write it (another highest value).
    write("hdr_histogram", "hdrhistogram_lib.hdr", hdr_encode(hdr_record([(1000, 5), (2000, 1)]), highest=3_600_000_000))

    total = 0
    for dirpath, _, files in os.walk(CORPUS):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    print(f"make_seeds: wrote {CORPUS} ({total} bytes)")


if __name__ == "__main__":
    main()
