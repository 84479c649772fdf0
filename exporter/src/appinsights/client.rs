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

use std::time::Duration;

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

/// Gzips JSON arrays of already-serialized envelopes, reusing one deflate
/// state (allocating and zeroing a fresh one per batch was a visible share
/// of the forwarder's CPU).
pub struct Gzipper {
    deflate: flate2::Compress,
}

impl Default for Gzipper {
    fn default() -> Gzipper {
        Gzipper { deflate: flate2::Compress::new(flate2::Compression::fast(), false) }
    }
}

/// RFC 1952 member header: deflate, no name or time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

impl Gzipper {
    /// `[item,item,…]` as one gzip member.
    pub fn array(&mut self, items: &[&[u8]]) -> Bytes {
        self.deflate.reset();
        let raw: usize = items.iter().map(|i| i.len() + 1).sum::<usize>() + 1;
        let mut out = Vec::with_capacity(raw / 4 + 64);
        out.extend_from_slice(&GZIP_HEADER);
        let mut crc = flate2::Crc::new();
        let mut put = |out: &mut Vec<u8>, chunk: &[u8], flush: flate2::FlushCompress| {
            crc.update(chunk);
            let mut rest = chunk;
            loop {
                if out.capacity() - out.len() < 1024 {
                    out.reserve(out.capacity().max(4096));
                }
                let before = self.deflate.total_in();
                let status = self.deflate.compress_vec(rest, out, flush).expect("deflate into a Vec");
                rest = &rest[(self.deflate.total_in() - before) as usize..];
                let done = match flush {
                    flate2::FlushCompress::Finish => status == flate2::Status::StreamEnd,
                    _ => rest.is_empty(),
                };
                if done {
                    return;
                }
            }
        };
        put(&mut out, b"[", flate2::FlushCompress::None);
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                put(&mut out, b",", flate2::FlushCompress::None);
            }
            put(&mut out, item, flate2::FlushCompress::None);
        }
        put(&mut out, b"]", flate2::FlushCompress::Finish);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&crc.amount().to_le_bytes());
        Bytes::from(out)
    }
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

    /// Sends one batch of `n` items (gzipped by [`Gzipper::array`]).
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn gzipped_arrays_decompress_to_the_items_and_the_state_is_reused() {
        let mut gz = Gzipper::default();
        let big = format!("{{\"k\":\"{}\"}}", "x".repeat(300_000));
        for items in [vec![&b"{\"a\":1}"[..], b"{\"b\":2}"], vec![], vec![big.as_bytes(), b"{}"]] {
            let body = gz.array(&items);
            let mut text = String::new();
            flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text).unwrap();
            let want =
                format!("[{}]", items.iter().map(|i| std::str::from_utf8(i).unwrap()).collect::<Vec<_>>().join(","));
            assert_eq!(text, want);
        }
    }
}
