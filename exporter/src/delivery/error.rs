//! What one outbound call came to when it did not succeed.

use std::time::{Duration, SystemTime};

use reqwest::{StatusCode, header::HeaderMap};

/// How a failed call should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The same request may succeed later: network errors, timeouts,
    /// resets, 408, 425, 429, 5xx.
    Retriable,
    /// The receiver refuses this request (another 4xx, a redirect tally
    /// does not follow): retrying it unchanged will not help.
    Refused,
    /// The receiver refuses tally itself (401, 403: a wrong or revoked
    /// credential): nothing else will work either; stop and say so.
    Halt,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Retriable => "retriable",
            ErrorKind::Refused => "refused",
            ErrorKind::Halt => "halt",
        }
    }
}

/// A failed outbound call: its kind, the HTTP status if there was an
/// answer, a message for logs (no URL: it may carry a token), and the wait
/// the server asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub kind: ErrorKind,
    pub status: Option<u16>,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl CallError {
    pub fn retriable(message: impl Into<String>) -> CallError {
        CallError { kind: ErrorKind::Retriable, status: None, message: message.into(), retry_after: None }
    }

    pub fn refused(message: impl Into<String>) -> CallError {
        CallError { kind: ErrorKind::Refused, status: None, message: message.into(), retry_after: None }
    }

    pub fn halt(message: impl Into<String>) -> CallError {
        CallError { kind: ErrorKind::Halt, status: None, message: message.into(), retry_after: None }
    }

    /// A transport error (connect, reset, timeout, body): retriable. The
    /// message has the causes but not the URL.
    pub fn transport(e: reqwest::Error) -> CallError {
        let timeout = e.is_timeout();
        let mut message = error_chain(&e.without_url());
        if timeout && !message.contains("timed out") {
            message.push_str(" (timed out)");
        }
        CallError::retriable(message)
    }

    pub fn is_retriable(&self) -> bool {
        self.kind == ErrorKind::Retriable
    }

    pub fn halts(&self) -> bool {
        self.kind == ErrorKind::Halt
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "HTTP {s}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for CallError {}

/// What an HTTP status means for the request that got it: `None` for
/// success (2xx), else its [`ErrorKind`].
pub fn classify(status: StatusCode) -> Option<ErrorKind> {
    if status.is_success() {
        return None;
    }
    Some(match status.as_u16() {
        401 | 403 => ErrorKind::Halt,
        408 | 425 | 429 => ErrorKind::Retriable,
        s if s >= 500 => ErrorKind::Retriable,
        _ => ErrorKind::Refused,
    })
}

/// The longest wait a server can ask for; beyond it the answer is taken
/// as an hour (a broken header must not stall a sender for a year).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The wait a server asked for: `retry-after-ms` / `x-ms-retry-after-ms`
/// (Azure) in milliseconds, else `Retry-After` in seconds or as an HTTP
/// date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let wait = if let Some(ms) = text("retry-after-ms").or_else(|| text("x-ms-retry-after-ms")) {
        Duration::from_millis(ms.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)? as u64)
    } else {
        let v = text("retry-after")?;
        match v.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => {
                let at = httpdate(v)?;
                at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
            }
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form HTTP requires
/// senders to use.
fn httpdate(s: &str) -> Option<SystemTime> {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%a, %d %b %Y %H:%M:%S GMT").ok()?;
    let secs = u64::try_from(t.and_utc().timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// An error with its causes ("error sending request: connection refused").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn statuses_are_classified_once() {
        let kind = |s: u16| classify(StatusCode::from_u16(s).unwrap());
        assert_eq!(kind(200), None);
        assert_eq!(kind(204), None);
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(kind(s), Some(ErrorKind::Retriable), "{s}");
        }
        for s in [400, 404, 409, 413, 422, 301, 302] {
            assert_eq!(kind(s), Some(ErrorKind::Refused), "{s}");
        }
        assert_eq!(kind(401), Some(ErrorKind::Halt));
        assert_eq!(kind(403), Some(ErrorKind::Halt));
    }

    #[test]
    fn retry_after_in_its_three_spellings() {
        let h = |name: &'static str, v: &str| {
            let mut m = HeaderMap::new();
            m.insert(name, HeaderValue::from_str(v).unwrap());
            retry_after(&m)
        };
        assert_eq!(h("retry-after", "7"), Some(Duration::from_secs(7)));
        assert_eq!(h("retry-after-ms", "250"), Some(Duration::from_millis(250)));
        assert_eq!(h("x-ms-retry-after-ms", "1500"), Some(Duration::from_millis(1500)));
        assert_eq!(h("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO)); // in the past
        let later = chrono::Utc::now() + chrono::Duration::seconds(120);
        let wait = h("retry-after", &later.format("%a, %d %b %Y %H:%M:%S GMT").to_string()).unwrap();
        assert!(wait > Duration::from_secs(110) && wait <= Duration::from_secs(120), "{wait:?}");
        assert_eq!(h("retry-after", "99999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(h("retry-after", "soon"), None);
        assert_eq!(h("retry-after-ms", "-5"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
