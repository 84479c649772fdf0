#!/usr/bin/env node
// Send real OpenTelemetry JS SDK telemetry (traces, logs, metrics) to an OTLP/HTTP
// endpoint using the OTLP **HTTP/JSON** exporters.
//
// Used by tally's integration tests as a subprocess. Telemetry is produced with the
// real SDK (BasicTracerProvider / LoggerProvider / MeterProvider), collected with the
// SDK's in-memory exporters, then handed to the real OTLP exporter's
// export(items, callback); every callback result is checked against
// ExportResultCode.SUCCESS and any failure exits 1 with a message on stderr.
// On success exactly one JSON line is printed to stdout:
//   {"spans": N, "logs": N, "metric_points": K, "protocol": "http/json", "compression": "..."}
//
// Usage:
//   node otel_send.mjs --endpoint http://127.0.0.1:4318 --protocol http/json \
//     --compression none|gzip --tenant T --service NAME --spans N --logs N \
//     --metric-series K [--header k=v ...] [--tenant-attr tenant.id] [--timeout 10]

// Hermetic run: OTEL_* variables from the caller's environment must not change what
// is sent (exporters read OTEL_EXPORTER_OTLP_* at construction time, which is later).
for (const k of Object.keys(process.env)) {
  if (k.startsWith('OTEL_')) delete process.env[k];
}

import { diag, DiagLogLevel, trace, ROOT_CONTEXT, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { SeverityNumber } from '@opentelemetry/api-logs';
import { ExportResultCode } from '@opentelemetry/core';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import {
  LoggerProvider,
  InMemoryLogRecordExporter,
  SimpleLogRecordProcessor,
} from '@opentelemetry/sdk-logs';
import {
  MeterProvider,
  InMemoryMetricExporter,
  PeriodicExportingMetricReader,
  AggregationTemporality,
} from '@opentelemetry/sdk-metrics';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';

const METRIC_NAME = 'tally.test.requests';
const SPANS_PER_TRACE = 4;
const PROG = 'otel_send.mjs';

function fail(msg) {
  process.stderr.write(`${PROG}: ${msg}\n`);
  process.exit(1);
}

function usage(msg) {
  process.stderr.write(
    `${PROG}: ${msg}\nusage: node ${PROG} --endpoint URL --protocol http/json ` +
      `--compression none|gzip --tenant T --service NAME --spans N --logs N ` +
      `--metric-series K [--header k=v ...] [--tenant-attr tenant.id] [--timeout SECS] ` +
      `[--batch-size 1..512]\n`,
  );
  process.exit(2);
}

function parseArgs(argv) {
  const a = {
    endpoint: null,
    protocol: null,
    compression: 'none',
    tenant: null,
    tenantAttr: 'tenant.id',
    service: null,
    spans: 0,
    logs: 0,
    metricSeries: 0,
    headers: {},
    timeout: 10,
    batchSize: 512,
  };
  const intArg = (name, v) => {
    if (!/^\d+$/.test(v ?? '')) usage(`${name} expects a non-negative integer, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    let flag = argv[i];
    let val;
    const eq = flag.indexOf('=');
    if (flag.startsWith('--') && eq > 0) {
      val = flag.slice(eq + 1);
      flag = flag.slice(0, eq);
    } else {
      val = argv[i + 1];
      if (flag === '-h' || flag === '--help') usage('help');
      if (val === undefined) usage(`${flag} needs a value`);
      i++;
    }
    switch (flag) {
      case '--endpoint': a.endpoint = val.replace(/\/+$/, ''); break;
      case '--protocol': a.protocol = val; break;
      case '--compression': a.compression = val; break;
      case '--tenant': a.tenant = val; break;
      case '--tenant-attr': a.tenantAttr = val; break;
      case '--service': a.service = val; break;
      case '--spans': a.spans = intArg(flag, val); break;
      case '--logs': a.logs = intArg(flag, val); break;
      case '--metric-series': a.metricSeries = intArg(flag, val); break;
      case '--batch-size': a.batchSize = intArg(flag, val); break;
      case '--timeout': {
        const t = Number(val);
        if (!(t > 0)) usage(`--timeout expects a positive number, got ${JSON.stringify(val)}`);
        a.timeout = t;
        break;
      }
      case '--header': {
        const j = val.indexOf('=');
        if (j <= 0) usage(`--header expects k=v, got ${JSON.stringify(val)}`);
        a.headers[val.slice(0, j).trim()] = val.slice(j + 1);
        break;
      }
      default: usage(`unknown argument ${flag}`);
    }
  }
  if (!a.endpoint) usage('--endpoint is required');
  if (a.protocol !== 'http/json') usage(`--protocol must be http/json, got ${JSON.stringify(a.protocol)}`);
  if (!['none', 'gzip'].includes(a.compression)) usage(`--compression must be none or gzip`);
  if (a.tenant === null) usage('--tenant is required (may be "")');
  if (!a.service) usage('--service is required');
  if (a.batchSize < 1 || a.batchSize > 512) usage('--batch-size must be in 1..512');
  return a;
}

function makeSpans(resource, n) {
  const mem = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ resource, spanProcessors: [new SimpleSpanProcessor(mem)] });
  const tracer = provider.getTracer('tally.test.client', '1.0.0');
  let made = 0;
  while (made < n) {
    // One trace = a SERVER root span with up to SPANS_PER_TRACE-1 INTERNAL children.
    const root = tracer.startSpan(`GET /items/${made}`, {
      kind: SpanKind.SERVER,
      attributes: { 'http.request.method': 'GET', 'http.response.status_code': 200, 'tally.test.index': made },
    });
    made++;
    const parentCtx = trace.setSpan(ROOT_CONTEXT, root);
    const children = Math.min(SPANS_PER_TRACE - 1, n - made);
    for (let c = 0; c < children; c++) {
      const child = tracer.startSpan(
        'db.query',
        { kind: SpanKind.INTERNAL, attributes: { 'tally.test.index': made } },
        parentCtx,
      );
      child.addEvent('rows.fetched', { rows: 3 });
      child.end();
      made++;
    }
    root.setStatus({ code: SpanStatusCode.OK });
    root.end();
  }
  const spans = mem.getFinishedSpans().slice();
  if (spans.length !== n) fail(`internal: SDK produced ${spans.length} spans, expected ${n}`);
  return { spans, provider };
}

function makeLogs(resource, n) {
  const mem = new InMemoryLogRecordExporter();
  const provider = new LoggerProvider({
    resource,
    processors: [new SimpleLogRecordProcessor({ exporter: mem })],
  });
  const logger = provider.getLogger('tally.test.client', '1.0.0');
  for (let i = 0; i < n; i++) {
    logger.emit({
      timestamp: Date.now(),
      severityNumber: SeverityNumber.INFO,
      severityText: 'INFO',
      body: `tally test log record ${i}`,
      attributes: { 'tally.test.index': i, component: PROG },
    });
  }
  const logs = mem.getFinishedLogRecords().slice();
  if (logs.length !== n) fail(`internal: SDK produced ${logs.length} log records, expected ${n}`);
  return { logs, provider };
}

async function makeMetrics(resource, k) {
  if (k === 0) return { resourceMetrics: null, points: 0, provider: null };
  const mem = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({
    exporter: mem,
    exportIntervalMillis: 3_600_000, // only our explicit forceFlush() collects
    exportTimeoutMillis: 30_000,
    // Raise the default 2000-series limit so K series never overflow.
    cardinalityLimits: { default: Math.max(2000, k + 10) },
  });
  const provider = new MeterProvider({ resource, readers: [reader] });
  const meter = provider.getMeter('tally.test.client', '1.0.0');
  const counter = meter.createCounter(METRIC_NAME, { unit: '{request}', description: 'tally test counter' });
  for (let i = 0; i < k; i++) counter.add(i + 1, { series: `s${i}`, route: `/r/${i}` });
  await reader.forceFlush();
  const collected = mem.getMetrics();
  if (collected.length !== 1) fail(`internal: expected 1 metric collection, got ${collected.length}`);
  const resourceMetrics = collected[0];
  let points = 0;
  for (const sm of resourceMetrics.scopeMetrics) for (const m of sm.metrics) points += m.dataPoints.length;
  if (points !== k) fail(`internal: SDK produced ${points} metric data points, expected ${k}`);
  return { resourceMetrics, points, provider };
}

function exportOnce(exporter, items, what, timeoutSecs) {
  return new Promise((resolve) => {
    const started = Date.now();
    // Safety net in case the exporter never calls back.
    const guard = setTimeout(
      () => fail(`${what}: exporter did not call back within ${timeoutSecs + 5}s`),
      (timeoutSecs + 5) * 1000,
    );
    try {
      exporter.export(items, (result) => {
        clearTimeout(guard);
        if (result.code !== ExportResultCode.SUCCESS) {
          const err = result.error ? `${result.error.name || 'Error'}: ${result.error.message}` : 'no error detail';
          const extra = result.error && result.error.code !== undefined ? ` (code ${result.error.code})` : '';
          const body = result.error && result.error.data ? ` body=${JSON.stringify(String(result.error.data).slice(0, 300))}` : '';
          fail(`${what} failed after ${((Date.now() - started) / 1000).toFixed(1)}s: ${err}${extra}${body}`);
        }
        resolve();
      });
    } catch (e) {
      clearTimeout(guard);
      fail(`${what} threw ${e && e.stack ? e.stack : e}`);
    }
  });
}

async function exportBatched(exporter, items, signal, batch, timeoutSecs) {
  for (let start = 0; start < items.length; start += batch) {
    const chunk = items.slice(start, start + batch);
    await exportOnce(exporter, chunk, `${signal} export of items ${start}..${start + chunk.length - 1}`, timeoutSecs);
  }
}

function withTimeout(promise, ms) {
  return Promise.race([promise, new Promise((r) => setTimeout(r, ms).unref())]);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));

  // SDK/exporter diagnostics (retries, failures) go to stderr, never stdout.
  diag.setLogger(
    {
      error: (...m) => process.stderr.write(`otel diag error: ${m.join(' ')}\n`),
      warn: (...m) => process.stderr.write(`otel diag warn: ${m.join(' ')}\n`),
      info: (...m) => process.stderr.write(`otel diag info: ${m.join(' ')}\n`),
      debug: () => {},
      verbose: () => {},
    },
    { logLevel: DiagLogLevel.INFO, suppressOverrideMessage: true },
  );

  const attrs = { 'service.name': args.service };
  if (args.tenant !== '') attrs[args.tenantAttr] = args.tenant;
  // SDK defaults (telemetry.sdk.*) like a real deployment; our attributes win on merge.
  const resource = defaultResource().merge(resourceFromAttributes(attrs));

  const { spans, provider: tp } = makeSpans(resource, args.spans);
  const { logs, provider: lp } = makeLogs(resource, args.logs);
  const { resourceMetrics, points, provider: mp } = await makeMetrics(resource, args.metricSeries);

  const common = {
    headers: { ...args.headers },
    compression: args.compression, // CompressionAlgorithm values are 'none' | 'gzip'
    timeoutMillis: Math.round(args.timeout * 1000),
  };
  const traceExp = new OTLPTraceExporter({ ...common, url: `${args.endpoint}/v1/traces` });
  const logExp = new OTLPLogExporter({ ...common, url: `${args.endpoint}/v1/logs` });
  const metricExp = new OTLPMetricExporter({ ...common, url: `${args.endpoint}/v1/metrics` });

  await exportBatched(traceExp, spans, 'traces', args.batchSize, args.timeout);
  await exportBatched(logExp, logs, 'logs', args.batchSize, args.timeout);
  if (resourceMetrics) await exportOnce(metricExp, resourceMetrics, 'metrics export', args.timeout);

  await withTimeout(
    Promise.allSettled([
      traceExp.shutdown(),
      logExp.shutdown(),
      metricExp.shutdown(),
      tp.shutdown(),
      lp.shutdown(),
      mp ? mp.shutdown() : Promise.resolve(),
    ]),
    2000,
  );

  // Same byte-for-byte format as otel_send.py (Python json.dumps separators).
  const line =
    `{"spans": ${spans.length}, "logs": ${logs.length}, "metric_points": ${points}, ` +
    `"protocol": ${JSON.stringify(args.protocol)}, "compression": ${JSON.stringify(args.compression)}}`;
  process.stdout.write(line + '\n', () => process.exit(0));
}

main().catch((e) => fail(`unexpected error: ${e && e.stack ? e.stack : e}`));
