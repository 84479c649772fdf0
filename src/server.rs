//! Wiring: builds the stages downstream-first and runs the listeners until
//! shutdown, then drains.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::Context;
use tally_aggregator::{
    RollupStage,
    alert::AlertEngine,
    entitlements::{Entitlements, NoticeTargets},
};
use tally_collector::{
    Authenticator, Ingest, Pipeline, Policy, TenantResolver, UsageLedger, events, otlp, otlp_usage::OtlpMeters,
};
use tally_exporter::{alerts::Dispatcher, stripe::Stripe};
use tally_store::Store;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    Config,
    api::{
        self, alerts as alerts_api, entitlements as entitlements_api, rollups as rollup_api, stripe as stripe_api,
        tenants as tenants_api, usage as usage_api, webhook as webhook_api,
    },
    config::EnvLookup,
    serve,
};

/// A running tally. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub store: Store,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Opens the database (applying migrations), binds the three listeners and
/// starts serving. Port 0 in an address picks a free port; the bound
/// addresses are in the returned [`Server`].
pub async fn start(config: Config) -> anyhow::Result<Server> {
    start_with_env(config, &|name| std::env::var(name).ok()).await
}

/// [`start`], reading the secrets named by `*_env` keys through `env`.
pub async fn start_with_env(config: Config, env: EnvLookup<'_>) -> anyhow::Result<Server> {
    let alert_rules = config.alert_rules()?;
    let receivers = config.alert_receivers(Some(env))?;
    // Install the metrics recorder before anything records (the pipeline
    // sets its capacity gauges once, at construction).
    crate::observability::prometheus();
    let crate::database::Database { store, tokens } = crate::database::open(&config, env).await?;
    store.migrate().await.context("applying database migrations")?;
    // The Stripe sync, when a key is set: its meters are checked against
    // Stripe's before anything is served.
    let stripe = Stripe::connect(&config.stripe, &config.meters, env).await.map_err(anyhow::Error::msg)?;

    // The data path, downstream first. Every accepted OTLP request goes,
    // through the pipeline's fan-out, to each consumer as a peer, each with
    // its own bounded queue: the rollup stage (windows → rollup tables) and
    // the lake writer (Parquet files → spool → object store) push back on
    // ingestion when they fall behind.
    let mut fanout = Pipeline::builder(
        config.pipeline.queue_capacity,
        config.pipeline.max_queued_bytes,
        config.otlp.enqueue_timeout,
    );
    let rollups_rx = fanout.branch("rollups", Policy::Block);
    let lake_rx = config.lake.enabled.then(|| fanout.branch("lake", Policy::Block));
    // Application Insights, when a connection string is set: a forwarder,
    // so its branch sheds rather than pushes back.
    let ai = &config.appinsights;
    let appinsights = ai.connection_string(env(&ai.connection_string_env)).map_err(anyhow::Error::msg)?;
    let appinsights_rx =
        appinsights.as_ref().map(|_| fanout.branch("appinsights", Policy::Shed { max_bytes: ai.max_queued_bytes }));
    let pipeline = fanout.build();
    let stage = RollupStage::new(store.clone(), config.rollups.clone(), config.pipeline.flush_interval);
    let rollups = tokio::spawn(stage.run(rollups_rx));
    let appinsights_task = match (appinsights.as_ref(), appinsights_rx) {
        (Some(cs), Some(rx)) => {
            use tally_exporter::appinsights::{Mapper, MapperConfig, client::TrackClient, forwarder};
            let mut mapper_config = MapperConfig::new(cs.instrumentation_key.clone());
            // Counters started before this process count from their next point.
            mapper_config.count_series_started_after_ns = tally_core::now_ms() as u64 * 1_000_000;
            let mut client = TrackClient::new(cs.track_url(), ai.timeout).map_err(anyhow::Error::msg)?;
            if ai.entra_id {
                let audience = cs.aad_scope();
                let source = tally_exporter::identity::TokenSource::from_env(
                    env,
                    &audience,
                    ai.managed_identity_client_id.clone(),
                )
                .map_err(anyhow::Error::msg)?;
                client = client.with_token(source);
            }
            // It ends when the pipeline closes its queue (after the
            // listeners), sending what is buffered for up to drain_timeout.
            let spool = match ai.spool_max_bytes {
                0 => None,
                max => Some(
                    tally_exporter::appinsights::spool::Spool::open(config.data_dir.join("appinsights-spool"), max)
                        .await
                        .context("opening the Application Insights spool")?,
                ),
            };
            Some(forwarder::start(rx, Mapper::new(mapper_config), client, ai.clone(), spool))
        }
        _ => None,
    };
    let (usage_feed, appinsights_task) = match appinsights_task {
        Some((feed, task)) => (Some(feed), Some(task)),
        None => (None, None),
    };
    let lake = match lake_rx {
        Some(rx) => Some(crate::lake::start(&config, &store, env, rx)?),
        None => None,
    };

    // Entitlements ("may this tenant still use this meter?"): loaded before
    // anything is served, then kept current by the ledger's commits, the
    // webhooks and a refresher; their notices go through the alert outbox.
    let api_addr_hint = config.api.addr;
    let targets = NoticeTargets {
        receivers: if config.entitlements.receivers.is_empty() {
            receivers.iter().map(|r| r.name.clone()).collect()
        } else {
            config.entitlements.receivers.clone()
        },
        external_url: config.external_url(api_addr_hint),
    };
    let entitlements = Entitlements::new(store.clone(), &config.meters, config.entitlements.clone(), targets.clone());
    entitlements.load().await.context("loading entitlements")?;

    // Billing-grade usage (usage events, and usage derived from spans, logs
    // and metrics) goes to the ledger's group-commit task before a request
    // is acknowledged; it stops once the receivers and the API holding its
    // handles stop. Each commit's accepted records reach the entitlements.
    let observed = entitlements.clone();
    let (ledger, ledger_task) = UsageLedger::start_observed(
        store.clone(),
        config.events.max_commit_records,
        config.events.ledger_writers,
        Some(Arc::new(move |records, outcomes| observed.observe(records, outcomes))),
    );
    let auth = Authenticator::load(store.clone()).await.context("loading api keys")?;
    check_open_mode(&config, &auth)?;
    let ingest = Arc::new(
        Ingest::new(
            TenantResolver::new(&config.tenancy)?,
            pipeline,
            config.otlp.max_concurrent_requests,
            config.otlp.enqueue_timeout,
        )
        .with_auth(auth.clone())
        .with_retry_after(std::time::Duration::from_secs(config.otlp.retry_after_secs.into()))
        .with_decode_limits(config.otlp.decode_limits())
        .with_caller_share(
            config.otlp.max_concurrent_requests,
            config.otlp.max_concurrent_requests_per_caller,
            config.otlp.enqueue_timeout,
        )
        .with_otlp_usage(OtlpMeters::new(&config.meters), ledger.clone()),
    );
    // Bound before anything else starts, so a taken port fails the start
    // cleanly (and port 0 resolves to the address reported).
    let one_port = config.listen_addr();
    let mut bound = Vec::new();
    let specs = match one_port {
        Some(addr) => vec![(addr, "all")],
        None => {
            vec![(config.otlp.grpc_addr, "otlp_grpc"), (config.otlp.http_addr, "otlp_http"), (config.api.addr, "api")]
        }
    };
    for (addr, name) in specs {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {name} on {addr}"))?;
        bound.push((listener.local_addr()?, name, listener));
    }
    let addr_of = |i: usize| bound[i.min(bound.len() - 1)].0;
    let (grpc_addr, http_addr, api_addr) = (addr_of(0), addr_of(1), addr_of(2));

    // Work that runs on one replica at a time (PostgreSQL advisory locks):
    // rollup downsampling and retention, alert rounds and their delivery.
    let shutdown = CancellationToken::new();
    let maintenance =
        tokio::spawn(tally_aggregator::run_maintenance(store.clone(), config.rollups.clone(), shutdown.clone()));
    auth.spawn_refresh(config.auth.refresh_interval, shutdown.clone());
    if let Some((source, token)) = tokens {
        tokio::spawn(crate::database::renew_tokens(store.clone(), source, token, shutdown.clone()));
    }
    let meters = Arc::new(config.meters.clone());
    let external_url = config.external_url(api_addr);
    let engine = AlertEngine::new(
        store.clone(),
        alert_rules,
        config.alerting.clone(),
        meters.clone(),
        config.rollups.window,
        external_url.clone(),
    );
    let outbox = engine.outbox_signal();
    let alerts = tokio::spawn(engine.run(shutdown.clone()));
    let dispatcher = Dispatcher::new(
        store.clone(),
        receivers,
        config.alerting.retry_schedule.clone(),
        config.alerting.send_timeout,
        external_url,
    )
    .context("building the alert receivers' HTTP clients")?;
    let delivery = tokio::spawn(dispatcher.run(outbox, shutdown.clone()));
    // Usage to Stripe: the leader plans pushes from the ledger's changes,
    // sends them and reconciles closed periods.
    let stripe_sync = stripe.as_ref().map(|s| tokio::spawn(s.sync(store.clone()).run(shutdown.clone())));
    let entitlement_task = tokio::spawn(entitlements.clone().run(shutdown.clone()));
    // Per-tenant usage from the ledger to Application Insights (the leader).
    let usage_feed_task = match (usage_feed, appinsights.as_ref()) {
        (Some(feed), Some(cs)) if ai.usage => Some(tokio::spawn(tally_exporter::appinsights::usage_feed::run(
            store.clone(),
            feed,
            cs.instrumentation_key.clone(),
            config.meters.clone(),
            ai.usage_interval,
            shutdown.clone(),
        ))),
        _ => None,
    };
    // The receivers (OTLP over gRPC and HTTP → ingest → ledger, pipeline)
    // and the API (usage events → ledger; queries).
    let grpc_router = otlp::grpc_routes(ingest.clone(), config.otlp.max_request_bytes, config.otlp.request_timeout)
        .into_axum_router();
    let http_router = otlp::http_router(ingest, &config.otlp);
    let draining = Arc::new(AtomicBool::new(false));
    let api_state = api::ApiState { store: store.clone(), draining: draining.clone() };
    let v1 = api::v1_router(api_state.clone())
        .merge(events::events_router(events::EventsState {
            meters: Arc::new(events::Meters::new(&meters)),
            ledger,
            config: config.events.clone(),
            retry_after_secs: config.otlp.retry_after_secs,
            body_timeout: config.server.body_timeout,
        }))
        .merge(usage_api::router(usage_api::UsageState { store: store.clone(), meters }))
        .merge(rollup_api::router(rollup_api::RollupState {
            store: store.clone(),
            hourly_after_ms: config.rollups.window_retention.as_millis() as i64,
            daily_after_ms: config.rollups.hour_retention.as_millis() as i64,
        }))
        .merge(alerts_api::router(store.clone()))
        .merge(tenants_api::router(tenants_api::TenantsState {
            store: store.clone(),
            stripe_enabled: stripe.is_some(),
            entitlements: entitlements.clone(),
        }))
        .merge(entitlements_api::router(entitlements_api::EntitlementsState {
            store: store.clone(),
            entitlements: entitlements.clone(),
        }))
        .merge(stripe_api::router(stripe_api::StripeState { store: store.clone(), stripe: stripe.clone() }))
        .layer(axum::middleware::from_fn_with_state(auth, tally_collector::auth::require_caller));
    // Stripe's webhooks carry Stripe's signature, not an API key.
    let webhooks = webhook_api::router(webhook_api::WebhookState {
        store: store.clone(),
        secret: env(&config.stripe.webhook_secret_env).filter(|s| !s.is_empty()).map(tally_core::Secret::new),
        secret_env: config.stripe.webhook_secret_env.clone(),
        tolerance_s: config.stripe.webhook_tolerance.as_secs() as i64,
        tenant_key: config.stripe.tenant_metadata_key.clone(),
        entitlements,
        targets,
        body_timeout: config.server.body_timeout,
    });
    let api_router = api::public_router(api_state).merge(webhooks).merge(v1);

    // The listeners: three ports, or everything on one (routes do not
    // overlap: gRPC paths are /opentelemetry.proto…, OTLP/HTTP /v1/traces,
    // /v1/logs and /v1/metrics, the API the rest).
    let routers = match one_port {
        Some(_) => vec![api_router.merge(http_router).merge(grpc_router).fallback(api::openapi::one_port_not_found)],
        None => vec![grpc_router, http_router, api_router.fallback(api::openapi::not_found)],
    };
    let limits = config.server.limits(bound.len());
    let mut servers = Vec::new();
    for ((_, name, listener), router) in bound.into_iter().zip(routers) {
        let serving = serve::serve(listener, router, limits, name, shutdown.clone(), config.otlp.request_timeout);
        servers.push((name, tokio::spawn(serving)));
    }
    let token = shutdown.clone();
    let task_store = store.clone();
    let shutdown_timeout = config.shutdown_timeout;
    let task = tokio::spawn(async move {
        token.cancelled().await;
        draining.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!("shutting down: draining receivers");
        // Listeners first: once they have finished their in-flight requests
        // (bounded by otlp.request_timeout) every queue sender is gone, so
        // the rollup stage drains and writes every open window. Each step runs whatever the
        // previous ones returned, so a failed listener cannot skip the flush.
        let mut listeners = Ok(());
        for (name, server) in servers {
            listeners = listeners.and(joined(server.await, name));
        }
        if let Some(l) = &lake {
            l.drain();
        }
        let rollups = rollups.await.context("rollup stage");
        let forwarded = match appinsights_task {
            Some(task) => task.await.context("Application Insights forwarder"),
            None => Ok(()),
        };
        let lake = match lake {
            Some(l) => l.finish(shutdown_timeout).await,
            None => Ok(()),
        };
        let maintenance = maintenance.await.context("rollup maintenance");
        let alerts = alerts.await.context("alert evaluation");
        let delivery = delivery.await.context("alert delivery");
        let stripe = match stripe_sync {
            Some(task) => task.await.context("Stripe sync"),
            None => Ok(()),
        };
        let entitlements = entitlement_task.await.context("entitlements");
        let usage_feed = match usage_feed_task {
            Some(task) => task.await.context("Application Insights usage feed"),
            None => Ok(()),
        };
        let ledger = ledger_task.await.context("usage ledger writer");
        task_store.close().await;
        tracing::info!("shutdown complete");
        listeners
            .and(rollups)
            .and(forwarded)
            .and(lake)
            .and(maintenance)
            .and(alerts)
            .and(delivery)
            .and(stripe)
            .and(entitlements)
            .and(usage_feed)
            .and(ledger)
    });

    tracing::info!(
        otlp_grpc = %grpc_addr, otlp_http = %http_addr, api = %api_addr,
        database = %config.database_description(),
        stripe_sync = stripe.is_some(),
        appinsights = appinsights.is_some(),
        "tally is serving"
    );
    Ok(Server { grpc_addr, http_addr, api_addr, store, shutdown, task })
}

impl Server {
    /// Stops accepting, drains the queue, flushes, and waits for all of it.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?
    }

    /// A token that starts shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// A server task's outcome, whether it failed or panicked.
fn joined<E: Into<anyhow::Error>>(
    r: Result<Result<(), E>, tokio::task::JoinError>,
    what: &'static str,
) -> anyhow::Result<()> {
    r.context(what)?.map_err(Into::into).context(what)
}

/// With no API key, tally accepts anyone: fine on loopback, refused on
/// other addresses unless `auth.open` says so. Said loudly either way.
fn check_open_mode(config: &Config, auth: &Authenticator) -> anyhow::Result<()> {
    if !auth.is_open() {
        return Ok(());
    }
    let addrs = match config.listen_addr() {
        Some(addr) => vec![addr],
        None => vec![config.otlp.grpc_addr, config.otlp.http_addr, config.api.addr],
    };
    let exposed: Vec<SocketAddr> = addrs.into_iter().filter(|a| !a.ip().is_loopback()).collect();
    if exposed.is_empty() {
        tracing::warn!(
            "no API keys exist: OTLP and the API accept unauthenticated requests (loopback only); create one with `tally keys create`"
        );
        return Ok(());
    }
    anyhow::ensure!(
        config.auth.open,
        "no API keys exist and tally would listen on {exposed:?} without authentication; \
         create a key (`tally keys create --admin`) or set auth.open = true"
    );
    tracing::warn!(addresses = ?exposed, "no API keys exist and auth.open = true: accepting unauthenticated requests on non-loopback addresses");
    Ok(())
}
