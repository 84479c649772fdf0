//! Managed-identity tokens (Entra ID) for outbound calls, from whichever
//! source the environment offers, in this order:
//! - workload identity (AKS and other federated hosts): `AZURE_FEDERATED_TOKEN_FILE`,
//!   `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` (and `AZURE_AUTHORITY_HOST`, default
//!   `https://login.microsoftonline.com/`): the file's token is exchanged at
//!   `{authority}{tenant}/oauth2/v2.0/token` as a client assertion
//!   (client-credentials grant, scope `{resource}/.default`);
//! - the Container Apps / App Service endpoint (`IDENTITY_ENDPOINT` with
//!   `X-IDENTITY-HEADER: $IDENTITY_HEADER`, api-version 2019-08-01);
//! - IMDS (`http://169.254.169.254/metadata/identity/oauth2/token`,
//!   `Metadata: true`, api-version 2018-02-01; the variable
//!   `AZURE_IMDS_ENDPOINT` overrides the URL for tests).
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
    /// Workload identity federation.
    Workload {
        token_url: String,
        client_id: String,
        token_file: String,
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

/// Numbers come as strings from the identity endpoints; Entra's token
/// endpoint gives `expires_in` seconds instead.
#[derive(Deserialize)]
struct Token {
    access_token: String,
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

fn number(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::String(s) => s.parse().ok(),
        v => v.as_i64(),
    }
}

impl TokenSource {
    /// From the environment `env` (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`,
    /// else IMDS). `client_id` picks a user-assigned identity.
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        resource: &str,
        client_id: Option<String>,
    ) -> Result<TokenSource, String> {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        // A user-assigned identity: the configured one, else AZURE_CLIENT_ID
        // (as Azure's SDKs read it).
        let client_id = client_id.or_else(|| set("AZURE_CLIENT_ID"));
        let workload = (set("AZURE_FEDERATED_TOKEN_FILE"), set("AZURE_TENANT_ID"), client_id.clone());
        let endpoint = match (workload, set("IDENTITY_ENDPOINT"), set("IDENTITY_HEADER")) {
            ((Some(token_file), Some(tenant), Some(client_id)), _, _) => {
                let authority =
                    set("AZURE_AUTHORITY_HOST").unwrap_or_else(|| "https://login.microsoftonline.com/".into());
                let token_url = format!("{}/{tenant}/oauth2/v2.0/token", authority.trim_end_matches('/'));
                Endpoint::Workload { token_url, client_id, token_file }
            }
            (_, Some(url), Some(header)) => Endpoint::AppService { url, header },
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
            Endpoint::Workload { token_url, client_id, token_file } => {
                // Read each time: the platform rotates the file.
                let assertion = tokio::fs::read_to_string(token_file).await.map_err(|e| {
                    CallError::retriable(format!("reading AZURE_FEDERATED_TOKEN_FILE {token_file}: {e}"))
                })?;
                let scope = format!("{}/.default", self.resource);
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("scope", scope.as_str()),
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", assertion.trim()),
                ];
                let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
                self.http.post(token_url).header("content-type", "application/x-www-form-urlencoded").body(body)
            }
        };
        let answer = delivery::send(req, 64 << 10).await?.into_result()?;
        let t: Token = serde_json::from_slice(&answer.body)
            .map_err(|e| CallError::retriable(format!("managed identity answer: {e}")))?;
        let expires_on = t
            .expires_on
            .as_ref()
            .and_then(number)
            .or_else(|| t.expires_in.as_ref().and_then(number).map(|s| now_s + s))
            .unwrap_or(now_s + 600);
        *self.cached.lock().expect("token cache") = Some((t.access_token.clone(), expires_on));
        Ok(t.access_token)
    }

    /// How long the cached token is used before a new one is fetched (zero
    /// when none is cached).
    pub fn renew_in(&self) -> Duration {
        let now_s = now_ms() / 1000;
        let exp = self.cached.lock().expect("token cache").as_ref().map_or(now_s, |(_, exp)| *exp);
        Duration::from_secs(u64::try_from(exp - EARLY_S - now_s).unwrap_or(0))
    }

    /// Which source the tokens come from, for logs.
    pub fn source(&self) -> &'static str {
        match self.endpoint {
            Endpoint::AppService { .. } => "identity endpoint (IDENTITY_ENDPOINT)",
            Endpoint::Imds { .. } => "IMDS",
            Endpoint::Workload { .. } => "workload identity (AZURE_FEDERATED_TOKEN_FILE)",
        }
    }

    /// Drops the cached token (the service refused it).
    pub fn invalidate(&self) {
        *self.cached.lock().expect("token cache") = None;
    }
}
