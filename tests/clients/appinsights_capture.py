#!/usr/bin/env python3
"""Golden reference capture of Microsoft's Azure Monitor OpenTelemetry exporter.

Runs the *official* Python exporter (PyPI ``azure-monitor-opentelemetry-exporter``) and the
OpenTelemetry OTLP/HTTP protobuf exporter side by side over the same spans, log records and
metrics, and captures, on loopback only:

* every App Insights ingestion request (``POST /v2.1/track``): headers and decoded envelopes;
* every OTLP/HTTP request body (``/v1/traces``, ``/v1/logs``, ``/v1/metrics``), raw protobuf.

tally's own OTLP -> envelope mapper can then be fed the exact OTLP bytes and compared, field by
field, with what Microsoft's exporter sent for the same signals.  See
``tests/data/appinsights/README.md`` for the scenario list and the exporter's mapping rules.

Environment (NOT the repo's tests/clients/.venv; a throw-away venv outside the repo)::

    python3 -m venv /tmp/ai-venv
    /tmp/ai-venv/bin/pip install azure-monitor-opentelemetry-exporter==1.0.0b58 \
        opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2
    /tmp/ai-venv/bin/python tests/clients/appinsights_capture.py \
        tests/data/appinsights/reference_capture.json

Only the standard library and those packages are used.  Nothing leaves 127.0.0.1: statsbeat,
customer sdkstats and the OneSettings control plane are disabled through their environment
variables, offline storage is off, and a socket guard refuses (and records) any connection to a
non-loopback address.

Determinism: trace and span ids come from a seeded ``random.Random`` (fixed seed), span, span
event and log timestamps are fixed (based at 2026-01-01T12:00:00Z), so re-runs give the same ids
and times for traces and logs.  Still variable between runs: metric point times (the SDK stamps
collection time), the ``_OTELRESOURCE_`` envelope time, ``x-ms-client-request-id`` headers,
host-derived tags (``ai.device.id``, ``ai.device.locale``, ``ai.internal.sdkVersion``) and the
file paths / line numbers inside stack traces and ``code.*`` log attributes.
"""

from __future__ import annotations

import os

# Must be set before the exporter is imported: nothing may call Microsoft's endpoints.
os.environ["APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"] = "true"
os.environ["APPLICATIONINSIGHTS_SDKSTATS_DISABLED"] = "true"
os.environ["APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED"] = "true"
for _var in (
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_OPENTELEMETRY_RESOURCE_METRIC_DISABLED",
    "APPLICATIONINSIGHTS_METRIC_NAMESPACE_OPT_IN",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SERVICE_NAME",
):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)

import base64
import gzip
import http.server
import ipaddress
import json
import logging
import platform
import random
import socket
import sys
import threading
import time
import warnings
import zlib
from importlib import metadata

# ---------------------------------------------------------------------------------------------
# Loopback guard: record and refuse any connection that is not to 127.0.0.0/8 or ::1.
# ---------------------------------------------------------------------------------------------
BLOCKED_CONNECTIONS: list[str] = []
_orig_connect = socket.socket.connect
_orig_connect_ex = socket.socket.connect_ex


def _is_loopback(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) else address
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _guarded_connect(sock, address):
    if not _is_loopback(address):
        BLOCKED_CONNECTIONS.append(repr(address))
        raise ConnectionRefusedError(f"appinsights_capture: non-loopback connect blocked: {address!r}")
    return _orig_connect(sock, address)


def _guarded_connect_ex(sock, address):
    if not _is_loopback(address):
        BLOCKED_CONNECTIONS.append(repr(address))
        return 111  # ECONNREFUSED
    return _orig_connect_ex(sock, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]

warnings.filterwarnings("ignore", category=DeprecationWarning)

from google.protobuf import json_format  # noqa: E402
from opentelemetry import metrics, trace  # noqa: E402
from opentelemetry.exporter.otlp.proto.http import Compression  # noqa: E402
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2  # noqa: E402
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2  # noqa: E402
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: E402
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler  # noqa: E402
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: E402
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.id_generator import IdGenerator  # noqa: E402
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags  # noqa: E402

from azure.monitor.opentelemetry.exporter import (  # noqa: E402
    AzureMonitorLogExporter,
    AzureMonitorMetricExporter,
    AzureMonitorTraceExporter,
)

IKEY = "00000000-0000-0000-0000-000000000000"
T0 = 1_767_268_800 * 10**9  # 2026-01-01T12:00:00Z in ns; every span/event/log time is T0 + n ms
MS = 10**6
ID_SEED = 20260101

RESOURCE_ATTRIBUTES = {
    "service.name": "checkout",
    "service.namespace": "shop",
    "service.instance.id": "pod-1",
    "service.version": "1.2.3",
    "tenant.id": "acme",
}

SCENARIOS = {
    "1_http_server": "SERVER span 'GET /orders/{id}' (trace A root, T0..+250ms): http.request.method=GET, "
    "http.route=/orders/{id}, url.scheme=https, server.address=pizza.example.com, server.port=443, "
    "url.path=/orders/42, url.query=expand=lines, http.response.status_code=200, client.address=203.0.113.7, "
    "user_agent.original=curl/8.0, enduser.id=user-7, app.plan=pro; status UNSET -> Request",
    "2_db_client": "CLIENT span 'SELECT orders' (child of 1, +10..+35ms): db.system=db.system.name=postgresql, "
    "db.name=db.namespace=orders, db.statement=db.query.text='SELECT * FROM orders WHERE id = $1', "
    "db.operation.name=SELECT, server.address=db.internal, server.port=5432 -> RemoteDependency",
    "3_http_server_error": "SERVER span 'POST /checkout' (trace B root, T0+1000..+1080ms): POST, "
    "http.route=/checkout, url.scheme=https, server.address=pizza.example.com, server.port=443, url.path=/checkout, "
    "http.response.status_code=500, error.type=500, status ERROR('boom'), record_exception(ValueError('boom')) "
    "at +1070ms -> Request + Exception",
    "3b_http_server_503_unset": "SERVER span 'GET /health' (trace C root, T0+1200..+1205ms): GET, "
    "http.route=/health, url.scheme=http, server.address=pizza.example.com, server.port=8080, url.path=/health, "
    "http.response.status_code=503, status left UNSET -> Request",
    "3c_http_server_404_unset": "SERVER span 'GET /orders/{id}' (trace D root, T0+1300..+1302ms): GET, "
    "http.route=/orders/{id}, url.full=https://pizza.example.com/orders/999, url.scheme=https, "
    "http.response.status_code=404, status left UNSET -> Request",
    "4_messaging_consumer": "CONSUMER span 'orders process' (trace A, remote child of 7a producer, +300..+330ms): "
    "messaging.system=rabbitmq, messaging.destination.name=orders, messaging.operation=process, "
    "messaging.operation.type=process, messaging.operation.name=process -> Request",
    "5_llm_http_client_429": "CLIENT span 'chat gpt-4o' (child of 1, +60..+180ms): http.request.method=POST, "
    "url.full=https://api.openai.com/v1/chat/completions, server.address=api.openai.com (no server.port, no "
    "url.scheme), http.response.status_code=429, gen_ai.system=openai, gen_ai.request.model=gpt-4o, "
    "status UNSET -> RemoteDependency",
    "5b_http_client_404": "CLIENT span 'GET' (child of 1, +185..+200ms), plain HTTP without gen_ai: "
    "http.request.method=GET, url.full=https://payments.example.com:8443/v1/charges?limit=1, url.scheme=https, "
    "server.address=payments.example.com, server.port=8443, http.response.status_code=404, status UNSET "
    "-> RemoteDependency",
    "6_grpc_client": "CLIENT span 'inventory.Stock/Reserve' (child of 1, +40..+52ms): rpc.system=grpc, "
    "rpc.service=inventory.Stock, rpc.method=Reserve, rpc.grpc.status_code=0, server.address=inventory, "
    "server.port=50051 -> RemoteDependency",
    "7a_messaging_producer": "PRODUCER span 'orders publish' (child of 1, +205..+210ms): messaging.system=rabbitmq, "
    "messaging.destination.name=orders, messaging.operation=publish, messaging.operation.type=send "
    "-> RemoteDependency",
    "7b_internal_with_event": "INTERNAL span 'compute-total' (child of 1, +212..+220ms), attribute "
    "app.lines=3, app.tags=['a','b'] (string array), app.cached=True (bool), plain event 'cache.miss' "
    "{cache.key=order:42} at +215ms -> RemoteDependency + Message",
    "8a_log_info_in_span": "logger 'checkout.orders' INFO 'order 42 loaded' inside span 1 (+230ms), "
    "extra order.id=42, lines=3",
    "8b_log_error_in_span": "ERROR 'payment provider slow' inside span 1 (+231ms), extra order.id=42, provider=stripe",
    "8c_log_exception_in_span": "logger.exception('checkout failed for tenant acme') inside span 3 in an except "
    "ValueError('boom') block (+1075ms), extra order.id=43",
    "8d_log_info_no_span": "INFO 'inventory sync finished' outside any span (+3000ms), extra job=inventory-sync, items=17",
    "8e_log_error_no_span": "ERROR 'inventory sync failed' outside any span (+3001ms), extra job=inventory-sync, "
    "attempt=2",
    "8f_log_exception_attrs_no_stack": "WARNING 'card declined' outside any span (+3002ms) with attributes "
    "exception.type=CardError, exception.message=declined (no exception.stacktrace), extra job=charge",
    "9a_counter": "Counter 'orders.placed' unit {order} {plan=pro}: add 5, collect+export both readers (export 1), "
    "add 3, collect+export again (export 2). Azure reader DELTA -> 5, 3; OTLP reader CUMULATIVE -> 5, 8",
    "9b_observable_gauge": "ObservableGauge 'queue.depth' unit {message} {queue=emails} = 42 on every collection",
    "9c_histogram": "Histogram 'llm.request.duration' unit s {model=gpt-4o}: 0.1, 0.2, 0.5, 1.5 before export 1 "
    "(nothing recorded before export 2)",
    "9d_updown_counter": "UpDownCounter 'jobs.active' {queue=emails}: +3 before export 1, -1 before export 2 "
    "(cumulative for both readers: 3, 2)",
    "9e_exponential_histogram": "Histogram 'llm.tokens' unit {token} {model=gpt-4o} with a View selecting "
    "ExponentialBucketHistogramAggregation (both readers): 120, 250, 900 before export 1",
}


class SeededIdGenerator(IdGenerator):
    """Deterministic, realistic-looking ids (a seeded PRNG, never zero)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


# ---------------------------------------------------------------------------------------------
# Capture servers
# ---------------------------------------------------------------------------------------------
class Capture:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ai_requests: list[dict] = []  # App Insights ingestion
        self.otlp: dict[str, list[bytes]] = {"traces": [], "logs": [], "metrics": []}
        self.otlp_requests: list[dict] = []
        self.unexpected: list[str] = []


CAPTURE = Capture()


def _decode_body(raw: bytes, encoding: str) -> bytes:
    encoding = (encoding or "").strip().lower()
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        try:
            return zlib.decompress(raw)
        except zlib.error:
            return zlib.decompress(raw, -zlib.MAX_WBITS)
    return raw


def _parse_envelopes(body: bytes) -> list:
    text = body.decode("utf-8").strip()
    if not text:
        return []
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]  # x-json-stream


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # noqa: D401 - silence the default stderr log
        pass

    def _read(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return _decode_body(raw, self.headers.get("Content-Encoding", ""))

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class AppInsightsHandler(_QuietHandler):
    def do_POST(self):  # noqa: N802
        body = self._read()
        if self.path.rstrip("/") not in ("/v2.1/track", "/v2/track"):
            with CAPTURE.lock:
                CAPTURE.unexpected.append(f"appinsights POST {self.path}")
            self._reply(404, b"{}", "application/json")
            return
        envelopes = _parse_envelopes(body)
        with CAPTURE.lock:
            CAPTURE.ai_requests.append(
                {"path": self.path, "headers": dict(self.headers.items()), "envelopes": envelopes}
            )
        n = len(envelopes)
        reply = json.dumps({"itemsReceived": n, "itemsAccepted": n, "errors": []}).encode()
        self._reply(200, reply, "application/json")

    def do_GET(self):  # noqa: N802
        with CAPTURE.lock:
            CAPTURE.unexpected.append(f"appinsights GET {self.path}")
        self._reply(404, b"{}", "application/json")


class OtlpHandler(_QuietHandler):
    PATHS = {"/v1/traces": "traces", "/v1/logs": "logs", "/v1/metrics": "metrics"}

    def do_POST(self):  # noqa: N802
        body = self._read()
        signal = self.PATHS.get(self.path)
        if signal is None:
            with CAPTURE.lock:
                CAPTURE.unexpected.append(f"otlp POST {self.path}")
            self._reply(404, b"", "application/x-protobuf")
            return
        with CAPTURE.lock:
            CAPTURE.otlp[signal].append(body)
            CAPTURE.otlp_requests.append(
                {"path": self.path, "headers": dict(self.headers.items()), "bytes": len(body)}
            )
        # An empty Export*ServiceResponse serialises to zero bytes.
        self._reply(200, b"", "application/x-protobuf")


def _serve(handler) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=handler.__name__, daemon=True).start()
    return server


# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------
class _FixedLogTime(logging.Filter):
    """Stamps each record with the time the scenario chose (LogRecord.created is otherwise 'now')."""

    next_ns: int | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if self.next_ns is not None:
            record.created = self.next_ns / 1e9
            record.msecs = (self.next_ns // MS) % 1000
        return True


def emit_traces_and_logs(tracer: trace.Tracer, log: logging.Logger, stamp: _FixedLogTime) -> None:
    def at(ms: int) -> int:
        return T0 + ms * MS

    def child(parent):
        return trace.set_span_in_context(parent)

    # --- trace A: an HTTP request and everything it calls ----------------------------------
    root = tracer.start_span(
        "GET /orders/{id}",
        kind=SpanKind.SERVER,
        start_time=at(0),
        attributes={
            "http.request.method": "GET",
            "http.route": "/orders/{id}",
            "url.scheme": "https",
            "server.address": "pizza.example.com",
            "server.port": 443,
            "url.path": "/orders/42",
            "url.query": "expand=lines",
            "http.response.status_code": 200,
            "client.address": "203.0.113.7",
            "user_agent.original": "curl/8.0",
            "enduser.id": "user-7",
            "app.plan": "pro",
        },
    )
    ctx = child(root)

    db = tracer.start_span(
        "SELECT orders",
        context=ctx,
        kind=SpanKind.CLIENT,
        start_time=at(10),
        attributes={
            "db.system": "postgresql",
            "db.system.name": "postgresql",
            "db.name": "orders",
            "db.namespace": "orders",
            "db.statement": "SELECT * FROM orders WHERE id = $1",
            "db.query.text": "SELECT * FROM orders WHERE id = $1",
            "db.operation.name": "SELECT",
            "server.address": "db.internal",
            "server.port": 5432,
        },
    )
    db.end(end_time=at(35))

    grpc = tracer.start_span(
        "inventory.Stock/Reserve",
        context=ctx,
        kind=SpanKind.CLIENT,
        start_time=at(40),
        attributes={
            "rpc.system": "grpc",
            "rpc.service": "inventory.Stock",
            "rpc.method": "Reserve",
            "rpc.grpc.status_code": 0,
            "server.address": "inventory",
            "server.port": 50051,
        },
    )
    grpc.end(end_time=at(52))

    llm = tracer.start_span(
        "chat gpt-4o",
        context=ctx,
        kind=SpanKind.CLIENT,
        start_time=at(60),
        attributes={
            "http.request.method": "POST",
            "url.full": "https://api.openai.com/v1/chat/completions",
            "server.address": "api.openai.com",
            "http.response.status_code": 429,
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
        },
    )
    llm.end(end_time=at(180))

    pay = tracer.start_span(
        "GET",
        context=ctx,
        kind=SpanKind.CLIENT,
        start_time=at(185),
        attributes={
            "http.request.method": "GET",
            "url.full": "https://payments.example.com:8443/v1/charges?limit=1",
            "url.scheme": "https",
            "server.address": "payments.example.com",
            "server.port": 8443,
            "http.response.status_code": 404,
        },
    )
    pay.end(end_time=at(200))

    producer = tracer.start_span(
        "orders publish",
        context=ctx,
        kind=SpanKind.PRODUCER,
        start_time=at(205),
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.destination.name": "orders",
            "messaging.operation": "publish",
            "messaging.operation.type": "send",
        },
    )
    producer.end(end_time=at(210))

    internal = tracer.start_span(
        "compute-total",
        context=ctx,
        kind=SpanKind.INTERNAL,
        start_time=at(212),
        attributes={"app.lines": 3, "app.tags": ["a", "b"], "app.cached": True},
    )
    internal.add_event("cache.miss", attributes={"cache.key": "order:42"}, timestamp=at(215))
    internal.end(end_time=at(220))

    with trace.use_span(root, end_on_exit=False):
        stamp.next_ns = at(230)
        log.info("order %s loaded", "42", extra={"order.id": "42", "lines": 3})
        stamp.next_ns = at(231)
        log.error("payment provider slow", extra={"order.id": "42", "provider": "stripe"})
    root.end(end_time=at(250))

    # The consumer side of the message published above: a remote parent, same trace.
    remote_parent = SpanContext(
        trace_id=producer.get_span_context().trace_id,
        span_id=producer.get_span_context().span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    consumer = tracer.start_span(
        "orders process",
        context=trace.set_span_in_context(trace.NonRecordingSpan(remote_parent)),
        kind=SpanKind.CONSUMER,
        start_time=at(300),
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.destination.name": "orders",
            "messaging.operation": "process",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
        },
    )
    consumer.end(end_time=at(330))

    # --- trace B: a failing HTTP request -----------------------------------------------------
    failing = tracer.start_span(
        "POST /checkout",
        kind=SpanKind.SERVER,
        start_time=at(1000),
        attributes={
            "http.request.method": "POST",
            "http.route": "/checkout",
            "url.scheme": "https",
            "server.address": "pizza.example.com",
            "server.port": 443,
            "url.path": "/checkout",
            "http.response.status_code": 500,
            "error.type": "500",
        },
    )
    with trace.use_span(failing, end_on_exit=False):
        try:
            raise ValueError("boom")
        except ValueError as exc:
            failing.record_exception(exc, timestamp=at(1070))
            failing.set_status(Status(StatusCode.ERROR, "boom"))
            stamp.next_ns = at(1075)
            log.exception("checkout failed for tenant acme", extra={"order.id": "43"})
    failing.end(end_time=at(1080))

    # --- traces C, D: HTTP server spans whose status the instrumentation left UNSET ----------
    unset_503 = tracer.start_span(
        "GET /health",
        kind=SpanKind.SERVER,
        start_time=at(1200),
        attributes={
            "http.request.method": "GET",
            "http.route": "/health",
            "url.scheme": "http",
            "server.address": "pizza.example.com",
            "server.port": 8080,
            "url.path": "/health",
            "http.response.status_code": 503,
        },
    )
    unset_503.end(end_time=at(1205))
    unset_404 = tracer.start_span(
        "GET /orders/{id}",
        kind=SpanKind.SERVER,
        start_time=at(1300),
        attributes={
            "http.request.method": "GET",
            "http.route": "/orders/{id}",
            "url.full": "https://pizza.example.com/orders/999",
            "url.scheme": "https",
            "http.response.status_code": 404,
        },
    )
    unset_404.end(end_time=at(1302))

    # --- logs without any span ---------------------------------------------------------------
    stamp.next_ns = at(3000)
    log.info("inventory sync finished", extra={"job": "inventory-sync", "items": 17})
    stamp.next_ns = at(3001)
    log.error("inventory sync failed", extra={"job": "inventory-sync", "attempt": 2})
    stamp.next_ns = at(3002)
    log.warning(
        "card declined",
        extra={"exception.type": "CardError", "exception.message": "declined", "job": "charge"},
    )
    stamp.next_ns = None


# ---------------------------------------------------------------------------------------------
# Output helpers
# ---------------------------------------------------------------------------------------------
_OTLP_TYPES = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
}
_ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def _ids_to_hex(node):
    """MessageToDict renders bytes as base64; OTLP/JSON wants trace/span ids as lowercase hex."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                out[key] = base64.b64decode(value).hex()
            else:
                out[key] = _ids_to_hex(value)
        return out
    if isinstance(node, list):
        return [_ids_to_hex(v) for v in node]
    return node


def _versions() -> dict:
    names = [
        "azure-monitor-opentelemetry-exporter",
        "azure-core",
        "opentelemetry-api",
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-exporter-otlp-proto-common",
        "opentelemetry-proto",
        "opentelemetry-semantic-conventions",
        "protobuf",
        "requests",
    ]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# What every run must have produced (envelope type, name/message) -> count, and OTLP item counts.
EXPECTED_ENVELOPES = {
    ("Request", "GET /orders/{id}"): 2,  # scenarios 1 and 3c
    ("Request", "POST /checkout"): 1,
    ("Request", "GET /health"): 1,
    ("Request", "orders process"): 1,
    ("RemoteDependency", "SELECT orders"): 1,
    ("RemoteDependency", "inventory.Stock/Reserve"): 1,
    ("RemoteDependency", "POST /v1/chat/completions"): 1,  # span 'chat gpt-4o', renamed by the exporter
    ("RemoteDependency", "GET /v1/charges"): 1,  # span 'GET', renamed by the exporter
    ("RemoteDependency", "orders publish"): 1,
    ("RemoteDependency", "compute-total"): 1,
    ("Message", "cache.miss"): 1,
    ("Message", "order 42 loaded"): 1,
    ("Message", "payment provider slow"): 1,
    ("Message", "inventory sync finished"): 1,
    ("Message", "inventory sync failed"): 1,
    ("Exception", "boom"): 1,
    ("Exception", "checkout failed for tenant acme"): 1,
    ("Exception", "card declined"): 1,
    ("Metric", "_OTELRESOURCE_"): 1,
    ("Metric", "orders.placed"): 2,
    ("Metric", "jobs.active"): 2,
    ("Metric", "queue.depth"): 2,
    ("Metric", "llm.request.duration"): 1,
    ("Metric", "llm.tokens"): 1,
}
EXPECTED_OTLP = {"spans": 11, "log_records": 6, "metric_exports": 2}


def _envelope_key(envelope: dict) -> tuple[str, str]:
    kind = envelope["name"].rsplit(".", 1)[-1]
    base = envelope["data"]["baseData"]
    if kind == "Metric":
        return kind, base["metrics"][0]["name"]
    if kind == "Message":
        return kind, base["message"]
    if kind == "Exception":
        return kind, base["exceptions"][0]["message"]
    return kind, base["name"]


def check(result: dict) -> list[str]:
    problems = []
    seen: dict = {}
    for item in result["envelopes"]:
        key = _envelope_key(item["envelope"])
        seen[key] = seen.get(key, 0) + 1
    for key in sorted(set(EXPECTED_ENVELOPES) | set(seen)):
        if EXPECTED_ENVELOPES.get(key, 0) != seen.get(key, 0):
            problems.append(f"envelope {key}: expected {EXPECTED_ENVELOPES.get(key, 0)}, got {seen.get(key, 0)}")
    oj = result["otlp_json"]
    spans = sum(len(ss.get("spans", [])) for b in oj["traces"] for rs in b["resourceSpans"] for ss in rs["scopeSpans"])
    logs = sum(
        len(sl.get("logRecords", [])) for b in oj["logs"] for rl in b["resourceLogs"] for sl in rl["scopeLogs"]
    )
    got = {"spans": spans, "log_records": logs, "metric_exports": len(oj["metrics"])}
    if got != EXPECTED_OTLP:
        problems.append(f"otlp counts: expected {EXPECTED_OTLP}, got {got}")
    if result["unexpected_requests"]:
        problems.append(f"unexpected requests: {result['unexpected_requests']}")
    if result["blocked_connections"]:
        problems.append(f"non-loopback connections attempted: {result['blocked_connections']}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUT.json", file=sys.stderr)
        return 2
    out_path = argv[1]

    ai_server = _serve(AppInsightsHandler)
    otlp_server = _serve(OtlpHandler)
    ai_port = ai_server.server_address[1]
    otlp_base = f"http://127.0.0.1:{otlp_server.server_address[1]}"
    conn = f"InstrumentationKey={IKEY};IngestionEndpoint=http://127.0.0.1:{ai_port}/"

    resource = Resource.create(RESOURCE_ATTRIBUTES)
    # Resource.create also merges the SDK's telemetry.sdk.* attributes; keep them, they are real.

    # --- traces --------------------------------------------------------------------------
    tracer_provider = TracerProvider(resource=resource, id_generator=SeededIdGenerator(ID_SEED))
    trace.set_tracer_provider(tracer_provider)
    az_spans = AzureMonitorTraceExporter(
        connection_string=conn, disable_offline_storage=True, tracer_provider=tracer_provider
    )
    otlp_spans = OTLPSpanExporter(endpoint=f"{otlp_base}/v1/traces", compression=Compression.NoCompression)
    big = dict(schedule_delay_millis=3_600_000, max_queue_size=2048, max_export_batch_size=512)
    tracer_provider.add_span_processor(BatchSpanProcessor(az_spans, **big))
    tracer_provider.add_span_processor(BatchSpanProcessor(otlp_spans, **big))
    tracer = tracer_provider.get_tracer("tally.reference.capture", "1.0.0")

    # --- logs ----------------------------------------------------------------------------
    logger_provider = LoggerProvider(resource=resource)
    az_logs = AzureMonitorLogExporter(connection_string=conn, disable_offline_storage=True)
    otlp_logs = OTLPLogExporter(endpoint=f"{otlp_base}/v1/logs", compression=Compression.NoCompression)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(az_logs, **big))
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(otlp_logs, **big))
    stamp = _FixedLogTime()
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=logger_provider)
    handler.addFilter(stamp)
    log = logging.getLogger("checkout.orders")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.addHandler(handler)

    # --- metrics -------------------------------------------------------------------------
    az_metrics = AzureMonitorMetricExporter(connection_string=conn, disable_offline_storage=True)
    otlp_metrics = OTLPMetricExporter(
        endpoint=f"{otlp_base}/v1/metrics", compression=Compression.NoCompression
    )  # SDK default temporality: CUMULATIVE for every instrument
    # math.inf: no background thread and no extra collection at shutdown; we collect by hand.
    az_reader = PeriodicExportingMetricReader(az_metrics, export_interval_millis=float("inf"))
    otlp_reader = PeriodicExportingMetricReader(otlp_metrics, export_interval_millis=float("inf"))
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=[az_reader, otlp_reader],
        views=[View(instrument_name="llm.tokens", aggregation=ExponentialBucketHistogramAggregation())],
    )
    metrics.set_meter_provider(meter_provider)
    meter = meter_provider.get_meter("tally.reference.capture", "1.0.0")

    orders = meter.create_counter("orders.placed", unit="{order}", description="orders placed")
    jobs = meter.create_up_down_counter("jobs.active", unit="{job}", description="jobs in flight")
    latency = meter.create_histogram("llm.request.duration", unit="s", description="LLM request duration")
    tokens = meter.create_histogram("llm.tokens", unit="{token}", description="tokens per LLM call")
    meter.create_observable_gauge(
        "queue.depth",
        callbacks=[lambda _options: [metrics.Observation(42, {"queue": "emails"})]],
        unit="{message}",
        description="messages waiting",
    )

    # --- run -----------------------------------------------------------------------------
    emit_traces_and_logs(tracer, log, stamp)
    if not tracer_provider.force_flush(30_000):
        raise SystemExit("trace flush failed")
    if not logger_provider.force_flush(30_000):
        raise SystemExit("log flush failed")

    orders.add(5, {"plan": "pro"})
    jobs.add(3, {"queue": "emails"})
    for value in (0.1, 0.2, 0.5, 1.5):
        latency.record(value, {"model": "gpt-4o"})
    for value in (120, 250, 900):
        tokens.record(value, {"model": "gpt-4o"})
    az_reader.force_flush(30_000)  # export 1, Azure (delta where preferred)
    otlp_reader.force_flush(30_000)  # export 1, OTLP (cumulative)
    orders.add(3, {"plan": "pro"})
    jobs.add(-1, {"queue": "emails"})
    az_reader.force_flush(30_000)  # export 2
    otlp_reader.force_flush(30_000)

    # Everything of interest has been received (exports are synchronous); freeze the capture.
    with CAPTURE.lock:
        ai_requests = list(CAPTURE.ai_requests)
        otlp = {k: list(v) for k, v in CAPTURE.otlp.items()}
        otlp_requests = list(CAPTURE.otlp_requests)
        unexpected = list(CAPTURE.unexpected)

    tracer_provider.shutdown()
    logger_provider.shutdown()
    meter_provider.shutdown()
    ai_server.shutdown()
    otlp_server.shutdown()

    envelopes = []
    for index, request in enumerate(ai_requests):
        for envelope in request["envelopes"]:
            envelopes.append({"request": index, "headers": request["headers"], "envelope": envelope})

    result = {
        "generator": "tests/clients/appinsights_capture.py",
        "versions": _versions(),
        "connection_string": conn,
        "resource": RESOURCE_ATTRIBUTES,
        "time_base": {"T0_unix_nano": T0, "T0": "2026-01-01T12:00:00Z", "id_seed": ID_SEED},
        "scenarios": SCENARIOS,
        "ordering": (
            "App Insights requests in arrival order: 0 = trace batch (one BatchSpanProcessor flush: the "
            "_OTELRESOURCE_ metric first, then each span in end order, each followed by its span-event "
            "envelopes), 1 = log batch (emit order), 2 = metrics export 1, 3 = metrics export 2 (points in "
            "instrument registration order). 'envelopes' flattens them keeping order; 'request' is the "
            "request index. otlp.* lists hold the raw (uncompressed) protobuf request bodies per signal in "
            "arrival order: traces[0] all spans, logs[0] all records, metrics[0] export 1 and metrics[1] "
            "export 2 of the cumulative OTLP reader. otlp_json = MessageToDict of the same bodies with "
            "traceId/spanId/parentSpanId turned from base64 into lowercase hex (as OTLP/JSON encodes them)."
        ),
        "requests": [
            {"request": i, "path": r["path"], "headers": r["headers"], "items": len(r["envelopes"])}
            for i, r in enumerate(ai_requests)
        ],
        "envelopes": envelopes,
        "otlp_requests": otlp_requests,
        "otlp": {k: [base64.b64encode(b).decode("ascii") for b in v] for k, v in otlp.items()},
        "otlp_json": {
            k: [_ids_to_hex(json_format.MessageToDict(_OTLP_TYPES[k].FromString(b))) for b in v]
            for k, v in otlp.items()
        },
        "unexpected_requests": unexpected,
        "blocked_connections": list(BLOCKED_CONNECTIONS),
    }
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1, sort_keys=False, ensure_ascii=False)
        fh.write("\n")

    summary = {k: len(v) for k, v in otlp.items()}
    print(
        f"wrote {out_path}: {len(ai_requests)} App Insights requests, {len(envelopes)} envelopes; "
        f"OTLP bodies {summary}"
    )
    problems = check(result)
    for problem in problems:
        print(f"CHECK FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
