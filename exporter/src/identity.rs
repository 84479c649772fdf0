//! Managed-identity tokens (Entra ID) for outbound calls: the Container
//! Apps / App Service endpoint (`IDENTITY_ENDPOINT` with
//! `X-IDENTITY-HEADER: $IDENTITY_HEADER`, api-version 2019-08-01) when the
//! environment has one, else IMDS (`http://169.254.169.254/metadata/
//! identity/oauth2/token`, `Metadata: true`, api-version 2018-02-01; the
//! variable `AZURE_IMDS_ENDPOINT` overrides the URL for tests).
//!
//! A token is cached until five minutes before it expires; a 401 from the
//! service it was for drops it ([`TokenSource::invalidate`]) so the next
//! call fetches a fresh one.

use std::{sync::Mutex, time::Duration};

use serde::Deserialize;
use tally_core::now_ms;

use crate::delivery::{self, CallError};

const IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// A token is renewed this long before it expires.
const EARLY_S: i64 = 300;

#[derive(Debug, Clone)]
enum Endpoint {
    /// Container Apps, App Service, Functions.
    AppService {
        url: String,
        header: String,
    },
    Imds {
        url: String,
    },
}

/// Tokens for one resource (audience), e.g. `https://monitor.azure.com`.
#[derive(Debug)]
pub struct TokenSource {
    http: reqwest::Client,
    endpoint: Endpoint,
    resource: String,
    client_id: Option<String>,
    cached: Mutex<Option<(String, i64)>>,
}

/// Numbers come as strings from both endpoints.
#[derive(Deserialize)]
struct Token {
    access_token: String,
    expires_on: serde_json::Value,
}

impl TokenSource {
    /// From the environment `env` (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`,
    /// else IMDS). `client_id` picks a user-assigned identity.
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        resource: &str,
        client_id: Option<String>,
    ) -> Result<TokenSource, String> {
        let endpoint = match (env("IDENTITY_ENDPOINT"), env("IDENTITY_HEADER")) {
            (Some(url), Some(header)) if !url.is_empty() => Endpoint::AppService { url, header },
            _ => Endpoint::Imds { url: env("AZURE_IMDS_ENDPOINT").unwrap_or_else(|| IMDS.to_owned()) },
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("building the identity client: {e}"))?;
        Ok(TokenSource {
            http,
            endpoint,
            resource: resource.trim_end_matches("/.default").to_owned(),
            client_id,
            cached: Mutex::new(None),
        })
    }

    /// A valid token, from the cache or the endpoint.
    pub async fn token(&self) -> Result<String, CallError> {
        let now_s = now_ms() / 1000;
        if let Some((t, exp)) = self.cached.lock().expect("token cache").as_ref()
            && *exp - EARLY_S > now_s
        {
            return Ok(t.clone());
        }
        let mut query = vec![("resource", self.resource.as_str())];
        if let Some(c) = &self.client_id {
            query.push(("client_id", c));
        }
        let with = |url: &str, query: &[(&str, &str)]| {
            reqwest::Url::parse_with_params(url, query)
                .map_err(|e| CallError::refused(format!("identity endpoint: {e}")))
        };
        let req = match &self.endpoint {
            Endpoint::AppService { url, header } => {
                query.push(("api-version", "2019-08-01"));
                self.http.get(with(url, &query)?).header("X-IDENTITY-HEADER", header)
            }
            Endpoint::Imds { url } => {
                query.push(("api-version", "2018-02-01"));
                self.http.get(with(url, &query)?).header("Metadata", "true")
            }
        };
        let answer = delivery::send(req, 64 << 10).await?.into_result()?;
        let t: Token = serde_json::from_slice(&answer.body)
            .map_err(|e| CallError::retriable(format!("managed identity answer: {e}")))?;
        let expires_on = match &t.expires_on {
            serde_json::Value::String(s) => s.parse::<i64>().ok(),
            v => v.as_i64(),
        }
        .unwrap_or(now_s + 600);
        *self.cached.lock().expect("token cache") = Some((t.access_token.clone(), expires_on));
        Ok(t.access_token)
    }

    /// Drops the cached token (the service refused it).
    pub fn invalidate(&self) {
        *self.cached.lock().expect("token cache") = None;
    }
}
