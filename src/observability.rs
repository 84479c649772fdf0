//! tally's own logs and metrics.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tally_core::metric_names as m;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{Config, LogFormat};

/// Installs the tracing subscriber (once per process). `RUST_LOG` wins over
/// `log_level`. Logs go to stderr, so a command's output on stdout (JSON
/// reports, keys) stays clean.
pub fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let traces = self_traces(config);
    let registry = tracing_subscriber::registry().with(filter).with(traces);
    let _ = match config.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
    };
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
}

static TRACER_PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

/// The OpenTelemetry layer for `[self_telemetry]`, when an endpoint is set.
/// The exporter is OTLP/HTTP with a blocking client on the batch
/// processor's own thread (it needs no async runtime).
fn self_traces<S>(config: &Config) -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    let t = &config.self_telemetry;
    if t.otlp_endpoint.is_empty() {
        return None;
    }
    let endpoint = format!("{}/v1/traces", t.otlp_endpoint.trim_end_matches('/'));
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(endpoint).build() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("self_telemetry: cannot build the OTLP exporter: {e}");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(t.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new("tenant.id", t.tenant.clone()))
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("tally");
    let _ = TRACER_PROVIDER.set(provider);
    Some(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Sends the spans still batched (at exit).
pub fn flush_traces() {
    if let Some(p) = TRACER_PROVIDER.get() {
        let _ = p.force_flush();
        let _ = p.shutdown();
    }
}

/// The process-wide Prometheus recorder. Metrics are process-global in the
/// `metrics` crate, so several servers in one process (tests) share it.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(m::REQUEST_DURATION.to_owned()),
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            )
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then this
        // handle renders an empty registry, which the tests would show.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(m::RECEIVED_ITEMS, "Items (spans, log records, metric points) accepted");
    describe_counter!(m::RECEIVED_BYTES, "Request bytes received, after decompression");
    describe_counter!(m::REFUSED_ITEMS, "Items refused, by reason");
    describe_counter!(m::REFUSED_REQUESTS, "Whole requests refused, by reason");
    describe_histogram!(m::REQUEST_DURATION, metrics::Unit::Seconds, "OTLP export request handling time");
    describe_gauge!(m::QUEUE_DEPTH, "Requests waiting in the pipeline queue");
    describe_gauge!(m::QUEUE_CAPACITY, "Capacity of the pipeline queue, in requests");
    describe_gauge!(m::QUEUE_BYTES, "Request bytes held in the pipeline queue");
    describe_gauge!(m::QUEUE_BYTES_CAPACITY, "Byte budget of the pipeline queue");
    describe_counter!(m::PROCESSED_ITEMS, "Items taken off the queue by the downstream stage");
    describe_counter!(m::FLUSH_ERRORS, "Failed writes of downstream state (retried)");
    describe_gauge!(m::CONNECTIONS, "Connections open, per listener");
    describe_counter!(m::CONNECTIONS_REFUSED, "Connections closed at once: the listener was at server.max_connections");
    describe_counter!(m::CONNECTIONS_IDLE_CLOSED, "Connections closed after server.idle_timeout without traffic");
    describe_counter!(m::STRIPE_PUSHES, "Stripe meter-event attempts, by outcome");
    describe_gauge!(m::STRIPE_PUSH_ROWS, "Pushes in the Stripe sync ledger, by state");
    describe_histogram!(
        m::STRIPE_PUSH_DELAY_SECONDS,
        metrics::Unit::Seconds,
        "From planning a Stripe push to its delivery"
    );
    describe_counter!(m::STRIPE_PLANNED, "Stripe pushes planned (written before sending)");
    describe_gauge!(m::STRIPE_LEADER, "1 while this replica leads the Stripe sync");
    describe_gauge!(m::STRIPE_HALTED, "1 while the Stripe sync is halted: Stripe refuses the API key");
    describe_gauge!(m::STRIPE_DRIFT_LINES, "Reconciliation lines with confirmed drift");
    describe_gauge!(m::STRIPE_DRIFT_UNITS, "Sum of |drift| of confirmed reconciliation lines, in Stripe units");
    describe_counter!(m::STRIPE_WEBHOOKS, "Stripe webhook events, by outcome");
    describe_counter!(m::STRIPE_WEBHOOKS_REFUSED, "Stripe webhook requests refused, by reason");
    describe_counter!(m::ENTITLEMENT_CHECKS, "Entitlement checks answered, by reason");
    describe_counter!(m::BILLING_NOTICES, "Billing notices queued, by event");
    describe_counter!(m::APPINSIGHTS_REQUESTS, "Application Insights track calls, by HTTP status");
    describe_counter!(m::APPINSIGHTS_ACCEPTED, "Items Application Insights accepted");
    describe_counter!(m::APPINSIGHTS_RETRIED, "Items sent to Application Insights again");
    describe_counter!(m::APPINSIGHTS_DROPPED, "Items given up for Application Insights, by reason");
    describe_gauge!(m::APPINSIGHTS_BUFFERED, "Items waiting in the Application Insights buffer");
    describe_gauge!(m::APPINSIGHTS_SPOOL_BYTES, "Bytes in the Application Insights disk spool");
    describe_gauge!(m::APPINSIGHTS_DAILY_CAP, "1 while the Application Insights daily cap stops sending");
}
