//! `POST {IngestionEndpoint}/v2.1/track`: one gzipped JSON array of
//! envelopes, and what the answer means for each item.
//!
//! 200: all accepted. 206: the answer's `errors[{index, statusCode}]` say
//! which items failed; 408, 429, 500, 502, 503 and 504 are sent again, the
//! others (400: invalid) are dropped. 402 and 439: the resource's daily cap
//! is reached — nothing more until the next UTC day. 408, 429, 5xx and
//! network errors: the whole batch again after a backoff (`Retry-After`
//! honoured). 400 for the batch: every item dropped. 307/308 are followed
//! (reqwest keeps the body). With Entra ID, 401/403 drop the cached token
//! and the batch is sent again; other answers (401, 403 without it, 404):
//! dropped, logged.

use std::{io::Write, time::Duration};

use bytes::Bytes;
use serde::Deserialize;

use crate::delivery::{self, CallError};

/// What one track call did with each item.
#[derive(Debug, Clone, PartialEq)]
pub enum Tracked {
    /// Accepted, except these items: to send again, and dropped with their
    /// status.
    Partial { accepted: usize, retry: Vec<usize>, dropped: Vec<(usize, u16)> },
    /// The daily cap: send nothing until the next UTC day.
    DailyCap,
}

/// Per-item codes worth sending again.
pub fn retriable_item(code: u16) -> bool {
    matches!(code, 408 | 429 | 500 | 502 | 503 | 504)
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "itemsAccepted", default)]
    items_accepted: usize,
    #[serde(default)]
    errors: Vec<ItemError>,
}

#[derive(Deserialize)]
struct ItemError {
    index: usize,
    #[serde(rename = "statusCode")]
    status_code: u16,
    #[serde(default)]
    message: String,
}

/// The ingestion client.
#[derive(Debug, Clone)]
pub struct TrackClient {
    http: reqwest::Client,
    url: String,
    /// Entra ID: a Bearer token on every call.
    token: Option<std::sync::Arc<crate::identity::TokenSource>>,
}

/// Gzips a JSON array of already-serialized envelopes.
pub fn gzip_array(items: &[&[u8]]) -> Bytes {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut write = || -> std::io::Result<()> {
        gz.write_all(b"[")?;
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                gz.write_all(b",")?;
            }
            gz.write_all(item)?;
        }
        gz.write_all(b"]")
    };
    write().expect("writing to a Vec cannot fail");
    Bytes::from(gz.finish().expect("writing to a Vec cannot fail"))
}

impl TrackClient {
    pub fn new(url: String, timeout: Duration) -> Result<TrackClient, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| format!("building the Application Insights client: {e}"))?;
        Ok(TrackClient { http, url, token: None })
    }

    /// Sends an Entra ID token (from a managed identity) with every call.
    pub fn with_token(mut self, token: crate::identity::TokenSource) -> TrackClient {
        self.token = Some(std::sync::Arc::new(token));
        self
    }

    /// Sends one batch of `n` items (gzipped by [`gzip_array`]).
    #[tracing::instrument(name = "appinsights track", skip_all, fields(otel.kind = "client", items = n))]
    pub async fn track(&self, body: Bytes, n: usize) -> Result<Tracked, CallError> {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.token().await?);
        }
        let answer = delivery::send(req, 1 << 20).await?;
        let status = answer.status.as_u16();
        metrics::counter!(tally_core::metric_names::APPINSIGHTS_REQUESTS, "status" => status.to_string()).increment(1);
        match status {
            200 | 206 => {
                let parsed: Answer = serde_json::from_slice(&answer.body)
                    .unwrap_or(Answer { items_accepted: if status == 200 { n } else { 0 }, errors: Vec::new() });
                let (mut retry, mut dropped) = (Vec::new(), Vec::new());
                for e in parsed.errors.iter().filter(|e| e.index < n) {
                    if retriable_item(e.status_code) {
                        retry.push(e.index);
                    } else {
                        dropped.push((e.index, e.status_code));
                    }
                }
                if let Some(first) = parsed.errors.iter().find(|e| !retriable_item(e.status_code)) {
                    tracing::warn!(code = first.status_code, message = %first.message, "Application Insights refused items");
                }
                Ok(Tracked::Partial { accepted: parsed.items_accepted, retry, dropped })
            }
            402 | 439 => Ok(Tracked::DailyCap),
            // The token expired or was revoked early: a fresh one next time.
            401 | 403 if self.token.is_some() => {
                if let Some(t) = &self.token {
                    t.invalidate();
                }
                Err(CallError::retriable(format!("Application Insights refused the Entra ID token (HTTP {status})")))
            }
            400 => {
                tracing::warn!(answer = %answer.text().chars().take(300).collect::<String>(), "Application Insights refused a whole batch as invalid");
                Ok(Tracked::Partial { accepted: 0, retry: Vec::new(), dropped: (0..n).map(|i| (i, 400)).collect() })
            }
            408 | 429 | 500..=599 => {
                let mut e = answer.error().unwrap_or_else(|| CallError::retriable(format!("HTTP {status}")));
                e.kind = delivery::ErrorKind::Retriable;
                Err(e)
            }
            _ => {
                tracing::warn!(status, "Application Insights answered a batch with an unexpected status; dropped");
                Ok(Tracked::Partial { accepted: 0, retry: Vec::new(), dropped: (0..n).map(|i| (i, status)).collect() })
            }
        }
    }
}
