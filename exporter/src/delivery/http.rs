//! Sending one HTTP request and reading its answer without trusting the
//! server's size.

use bytes::Bytes;
use reqwest::{StatusCode, header::HeaderMap};

use super::{CallError, classify, retry_after};

/// A server's answer, the body read up to a limit.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// What a non-2xx answer means ([`classify`]), with the server's
    /// retry-after and the start of its body as the message; `None` for a
    /// 2xx.
    pub fn error(&self) -> Option<CallError> {
        let kind = classify(self.status)?;
        let text = self.text();
        let text: String = text.chars().take(300).collect();
        Some(CallError {
            kind,
            status: Some(self.status.as_u16()),
            message: text.trim().to_owned(),
            retry_after: retry_after(&self.headers),
        })
    }

    /// `Ok` for a 2xx, else [`Answer::error`].
    pub fn into_result(self) -> Result<Answer, CallError> {
        match self.error() {
            None => Ok(self),
            Some(e) => Err(e),
        }
    }
}

/// Sends `req` and reads at most `body_limit` bytes of the answer, whatever
/// its status. A transport error (connect, reset, timeout) is a retriable
/// [`CallError`]; an HTTP answer is returned for the caller to judge (most
/// call [`Answer::into_result`]; an API with its own rules reads the body
/// first).
pub async fn send(req: reqwest::RequestBuilder, body_limit: usize) -> Result<Answer, CallError> {
    let resp = req.send().await.map_err(CallError::transport)?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = read_limited(resp, body_limit).await.map_err(CallError::transport)?;
    Ok(Answer { status, headers, body })
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> reqwest::Result<Bytes> {
    let mut out: Vec<u8> = Vec::new();
    while out.len() < limit {
        match resp.chunk().await? {
            Some(chunk) => out.extend_from_slice(&chunk[..chunk.len().min(limit - out.len())]),
            None => break,
        }
    }
    Ok(Bytes::from(out))
}
