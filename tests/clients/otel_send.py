#!/usr/bin/env python3
"""Send real OpenTelemetry-SDK telemetry (traces, logs, metrics) to an OTLP endpoint.

Used by tally's integration tests as a subprocess. Telemetry is produced with the
real Python SDK (TracerProvider / LoggerProvider / MeterProvider), collected with
the SDK's in-memory exporter/reader, and then handed to the real OTLP exporter's
``export(...)`` so that every export's result can be checked: any failure exits 1
with a message on stderr. On success exactly one JSON line is printed to stdout:

    {"spans": N, "logs": N, "metric_points": K, "protocol": "...", "compression": "..."}

Example:
    python otel_send.py --endpoint http://127.0.0.1:4318 --protocol http/protobuf \
        --compression gzip --tenant acme --service checkout --spans 10 --logs 10 \
        --metric-series 3 --header authorization="Bearer t0ken"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# Make the run hermetic: OTEL_* variables from the caller's environment (e.g. a
# developer's OTEL_EXPORTER_OTLP_HEADERS or OTEL_RESOURCE_ATTRIBUTES) must not
# change what is sent. Everything is configured explicitly from the CLI.
for _k in list(os.environ):
    if _k.startswith("OTEL_"):
        del os.environ[_k]

METRIC_NAME = "tally.test.requests"
SPANS_PER_TRACE = 4


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True, help="base URL, e.g. http://127.0.0.1:4317")
    p.add_argument("--protocol", required=True, choices=["grpc", "http/protobuf"])
    p.add_argument("--compression", default="none", choices=["none", "gzip"])
    p.add_argument("--tenant", required=True, help="tenant id; empty string = no tenant attribute")
    p.add_argument("--tenant-attr", default="tenant.id", help="resource attribute key for the tenant")
    p.add_argument("--service", required=True, help="service.name resource attribute")
    p.add_argument("--spans", type=int, default=0)
    p.add_argument("--logs", type=int, default=0)
    p.add_argument("--metric-series", type=int, default=0, help="number of distinct counter attribute sets")
    p.add_argument("--header", action="append", default=[], metavar="K=V", help="request header (repeatable)")
    p.add_argument("--metric-exports", type=int, default=1,
                   help="export rounds of the (cumulative) counter, adding to every series before each")
    p.add_argument("--metric-increment", type=int, default=None,
                   help="added to every series per round (default: i+1 for series i)")
    p.add_argument("--span-attr", action="append", default=[], metavar="K=V",
                   help="attribute on every span (repeatable); integer values become int attributes")
    p.add_argument("--slo-requests", type=int, default=0,
                   help="SERVER spans on route /checkout lasting 1, 2, ... ms (cycling at --slo-max-ms)")
    p.add_argument("--slo-max-ms", type=int, default=100)
    p.add_argument("--error-every", type=int, default=0,
                   help="every Nth SLO span fails (HTTP 503 + status ERROR); 0 = none")
    p.add_argument("--queue-depths", default="",
                   help="comma-separated values of gauge worker.queue.depth{queue=emails}, one export each")
    p.add_argument("--histogram-values", default="",
                   help="comma-separated values recorded into histogram http.server.request.duration (ms), one export")
    p.add_argument("--timeout", type=float, default=10.0, help="per-export timeout in seconds (incl. retries)")
    p.add_argument("--batch-size", type=int, default=512, help="max spans/logs per export call")
    a = p.parse_args(argv)
    for name in ("spans", "logs", "metric_series"):
        if getattr(a, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    if not 1 <= a.batch_size <= 512:
        p.error("--batch-size must be in 1..512")
    headers: dict[str, str] = {}
    for h in a.header:
        if "=" not in h:
            p.error(f"--header expects k=v, got {h!r}")
        k, v = h.split("=", 1)
        k = k.strip()
        if not k:
            p.error(f"--header has an empty key: {h!r}")
        headers[k] = v
    a.headers = headers
    a.endpoint = a.endpoint.rstrip("/")
    return a


def fail(msg: str) -> "NoReturn":  # noqa: F821
    print(f"otel_send.py: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def build_resource(args):
    from opentelemetry.sdk.resources import Resource

    attrs = {"service.name": args.service}
    if args.tenant != "":
        attrs[args.tenant_attr] = args.tenant
    return Resource.create(attrs)


def span_attrs(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        k, _, v = pair.partition("=")
        out[k] = int(v) if v.lstrip("-").isdigit() else v
    return out


def make_spans(resource, n: int, extra: dict | None = None):
    extra = extra or {}
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

    mem = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(mem))
    tracer = provider.get_tracer("tally.test.client", "1.0.0")

    made = 0
    while made < n:
        # One trace = a SERVER root span with up to SPANS_PER_TRACE-1 INTERNAL children.
        root = tracer.start_span(
            f"GET /items/{made}",
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "GET", "http.response.status_code": 200, "tally.test.index": made,
                        **extra},
        )
        made += 1
        ctx = set_span_in_context(root)
        for _ in range(min(SPANS_PER_TRACE - 1, n - made)):
            child = tracer.start_span(
                "db.query", context=ctx, kind=SpanKind.INTERNAL, attributes={"tally.test.index": made, **extra}
            )
            child.add_event("rows.fetched", {"rows": 3})
            child.end()
            made += 1
        root.set_status(Status(StatusCode.OK))
        root.end()

    spans = list(mem.get_finished_spans())
    provider.shutdown()
    if len(spans) != n:
        fail(f"internal: SDK produced {len(spans)} spans, expected {n}")
    return spans


def make_slo_spans(resource, n: int, max_ms: int, error_every: int):
    """SERVER spans of known durations (i % max_ms + 1 ms) and failures."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, Status, StatusCode

    mem = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(mem))
    tracer = provider.get_tracer("tally.test.client", "1.0.0")
    end = time.time_ns()
    for i in range(n):
        failed = error_every > 0 and i % error_every == 0
        span = tracer.start_span(
            "POST",
            kind=SpanKind.SERVER,
            start_time=end - (i % max_ms + 1) * 1_000_000,
            attributes={"http.route": "/checkout", "http.request.method": "POST",
                        "http.response.status_code": 503 if failed else 200},
        )
        if failed:
            span.set_status(Status(StatusCode.ERROR, "upstream unavailable"))
        span.end(end_time=end)
    spans = list(mem.get_finished_spans())
    provider.shutdown()
    return spans


def make_queue_depths(resource, values: list[float]):
    """One snapshot per value of gauge worker.queue.depth{queue=emails}."""
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    if not values:
        return []
    current = {"v": values[0]}
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = provider.get_meter("tally.test.client", "1.0.0")
    meter.create_observable_gauge("worker.queue.depth", callbacks=[lambda _opts: [Observation(current["v"], {"queue": "emails"})]])
    snapshots = []
    for v in values:
        current["v"] = v
        snapshots.append(reader.get_metrics_data())
    provider.shutdown()
    return snapshots


def make_histogram(resource, values: list[float]):
    """One snapshot of histogram http.server.request.duration{route=/checkout}
    holding `values`, with the SDK's default explicit buckets."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    if not values:
        return []
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    hist = provider.get_meter("tally.test.client", "1.0.0").create_histogram("http.server.request.duration", unit="ms")
    for v in values:
        hist.record(v, {"http.route": "/checkout"})
    data = reader.get_metrics_data()
    provider.shutdown()
    return [data]


def make_logs(resource, n: int):
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    mem = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(SimpleLogRecordProcessor(mem))
    logger = provider.get_logger("tally.test.client", "1.0.0")
    for i in range(n):
        logger.emit(
            timestamp=time.time_ns(),
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body=f"tally test log record {i}",
            attributes={"tally.test.index": i, "component": "otel_send.py"},
        )
    logs = list(mem.get_finished_logs())
    provider.shutdown()
    if len(logs) != n:
        fail(f"internal: SDK produced {len(logs)} log records, expected {n}")
    return logs


def make_metrics(resource, k: int, exports: int = 1, increment: int | None = None):
    """Returns ([MetricsData], number_of_data_points): one cumulative snapshot
    per export round; each round adds `increment` (default i+1) to series i."""
    from opentelemetry.sdk.metrics import Counter, MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    if k == 0:
        return [], 0
    # Raise the SDK's default 2000-series cardinality limit so that K series are
    # never folded into an otel.metric.overflow point.
    reader = InMemoryMetricReader(cardinality_limits={Counter: max(2000, k + 10)})
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = provider.get_meter("tally.test.client", "1.0.0")
    counter = meter.create_counter(METRIC_NAME, unit="{request}", description="tally test counter")
    snapshots, points = [], 0
    for _ in range(exports):
        for i in range(k):
            counter.add(increment if increment is not None else i + 1, {"series": f"s{i}", "route": f"/r/{i}"})
        data = reader.get_metrics_data()
        if data is not None:
            snapshots.append(data)
            for rm in data.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        points += len(m.data.data_points)
    provider.shutdown()
    if points != k * exports:
        fail(f"internal: SDK produced {points} metric data points, expected {k * exports}")
    return snapshots, points


def build_exporters(args):
    t = args.timeout
    if args.protocol == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        comp = grpc.Compression.Gzip if args.compression == "gzip" else grpc.Compression.NoCompression
        # gRPC metadata keys must be lowercase.
        hdrs = tuple((k.lower(), v) for k, v in args.headers.items())
        insecure = not args.endpoint.startswith("https://")
        kw = dict(endpoint=args.endpoint, insecure=insecure, headers=hdrs, timeout=t, compression=comp)
        return OTLPSpanExporter(**kw), OTLPLogExporter(**kw), OTLPMetricExporter(**kw)

    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    comp = Compression.Gzip if args.compression == "gzip" else Compression.NoCompression
    base = args.endpoint
    common = dict(headers=dict(args.headers), timeout=t, compression=comp)
    return (
        OTLPSpanExporter(endpoint=f"{base}/v1/traces", **common),
        OTLPLogExporter(endpoint=f"{base}/v1/logs", **common),
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", **common),
    )


def is_success(result) -> bool:
    # SpanExportResult / LogRecordExportResult / MetricExportResult all name it SUCCESS.
    return getattr(result, "name", None) == "SUCCESS"


def export_batched(exporter, items, signal: str, batch: int) -> None:
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        t0 = time.monotonic()
        try:
            result = exporter.export(chunk)
        except Exception as e:  # noqa: BLE001
            fail(f"{signal} export of items {start}..{start + len(chunk) - 1} raised {type(e).__name__}: {e}")
        if not is_success(result):
            fail(
                f"{signal} export of items {start}..{start + len(chunk) - 1} returned {result} "
                f"after {time.monotonic() - t0:.1f}s"
            )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    resource = build_resource(args)

    spans = make_spans(resource, args.spans, span_attrs(args.span_attr))
    spans += make_slo_spans(resource, args.slo_requests, args.slo_max_ms, args.error_every)
    logs = make_logs(resource, args.logs)
    snapshots, points = make_metrics(resource, args.metric_series, args.metric_exports, args.metric_increment)
    depths = [float(v) for v in args.queue_depths.split(",") if v]
    snapshots += make_queue_depths(resource, depths)
    points += len(depths)
    hist_values = [float(v) for v in args.histogram_values.split(",") if v]
    snapshots += make_histogram(resource, hist_values)
    points += 1 if hist_values else 0

    span_exp, log_exp, metric_exp = build_exporters(args)
    try:
        export_batched(span_exp, spans, "traces", args.batch_size)
        export_batched(log_exp, logs, "logs", args.batch_size)
        for metrics_data in snapshots:
            try:
                result = metric_exp.export(metrics_data, timeout_millis=args.timeout * 1000)
            except Exception as e:  # noqa: BLE001
                fail(f"metrics export raised {type(e).__name__}: {e}")
            if not is_success(result):
                fail(f"metrics export returned {result}")
    finally:
        for exp in (span_exp, log_exp, metric_exp):
            try:
                exp.shutdown()
            except Exception:  # noqa: BLE001
                pass

    print(
        json.dumps(
            {
                "spans": len(spans),
                "logs": len(logs),
                "metric_points": points,
                "protocol": args.protocol,
                "compression": args.compression,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
