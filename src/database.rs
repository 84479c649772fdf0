//! Opening the database as `database_auth` says: with `database_url`'s
//! password, or with an Entra ID token of the managed identity as the
//! password (Azure Database for PostgreSQL Flexible Server), renewed before
//! it expires. A new token only changes how new connections sign in: the
//! pool and its open connections stay.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tally_core::metric_names;
use tally_exporter::identity::TokenSource;
use tally_store::Store;
use tokio_util::sync::CancellationToken;

use crate::{
    Config,
    config::{DatabaseAuth, EnvLookup},
};

/// The audience of Azure Database for PostgreSQL sign-in tokens.
pub const POSTGRES_ENTRA_RESOURCE: &str = "https://ossrdbms-aad.database.windows.net";

/// The open database, and the token source when tokens sign in.
pub struct Database {
    pub store: Store,
    pub tokens: Option<(Arc<TokenSource>, String)>,
}

/// Opens (without migrating) the configured database.
pub async fn open(config: &Config, env: EnvLookup<'_>) -> anyhow::Result<Database> {
    let url = config.database_url.expose();
    let what = || format!("opening database {}", config.database_description());
    match config.database_auth {
        DatabaseAuth::Password => {
            Ok(Database { store: Store::open(url, &config.data_dir).await.with_context(what)?, tokens: None })
        }
        DatabaseAuth::Azure => {
            let client_id = Some(config.database_client_id.clone()).filter(|c| !c.is_empty());
            let source = TokenSource::from_env(env, POSTGRES_ENTRA_RESOURCE, client_id).map_err(anyhow::Error::msg)?;
            let token = source.token().await.map_err(|e| {
                anyhow::anyhow!("database_auth = \"azure\": no token from the {}: {}", source.source(), e.message)
            })?;
            let store = Store::open_with_password(url, &config.data_dir, Some(&token)).await.with_context(what)?;
            tracing::info!(source = source.source(), "signed in to PostgreSQL with an Entra ID token");
            Ok(Database { store, tokens: Some((Arc::new(source), token)) })
        }
    }
}

/// Keeps the pool's sign-in token current until `stop`: asks the source
/// when the cached token is due for renewal (at least every minute), and
/// hands a new one to the pool. A failed renewal is retried every 5 s; the
/// last token keeps working until it expires.
pub async fn renew_tokens(store: Store, source: Arc<TokenSource>, mut current: String, stop: CancellationToken) {
    let mut retry = None;
    loop {
        let wait = retry.unwrap_or_else(|| source.renew_in().clamp(Duration::from_secs(1), Duration::from_secs(60)));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        match source.token().await {
            Ok(token) => {
                retry = None;
                if token != current {
                    store.set_password(&token);
                    current = token;
                    metrics::counter!(metric_names::DATABASE_TOKEN_RENEWALS, "outcome" => "renewed").increment(1);
                    tracing::info!("PostgreSQL sign-in token renewed");
                }
            }
            Err(e) => {
                retry = Some(Duration::from_secs(5));
                metrics::counter!(metric_names::DATABASE_TOKEN_RENEWALS, "outcome" => "failed").increment(1);
                tracing::warn!(error = %e.message, source = source.source(), "renewing the PostgreSQL sign-in token failed; retrying in 5 s");
            }
        }
    }
}
