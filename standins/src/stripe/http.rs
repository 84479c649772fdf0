//! Stripe's wire conventions: error bodies, `Request-Id`, API-key checks and
//! form-encoded parameters with bracketed keys.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};

/// A Stripe error answer: status, `{"error":{…}}` body and extra headers.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Value,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    /// A v1 error: `{"error":{"type","code","message","param","doc_url"}}`,
    /// leaving out the fields that are `None` (as Stripe does).
    pub fn v1(status: StatusCode, kind: &str, code: Option<&str>, param: Option<&str>, message: String) -> Self {
        let mut err = Map::new();
        if let Some(code) = code {
            err.insert("code".into(), code.into());
            err.insert(
                "doc_url".into(),
                format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-")).into(),
            );
        }
        err.insert("message".into(), message.into());
        if let Some(param) = param {
            err.insert("param".into(), param.into());
        }
        err.insert("type".into(), kind.into());
        ApiError { status, body: json!({ "error": err }), headers: Vec::new() }
    }

    /// A v2 error: `{"error":{"type","code","message"}}`.
    pub fn v2(status: StatusCode, kind: &str, code: &str, message: String) -> Self {
        ApiError {
            status,
            body: json!({"error": {"type": kind, "code": code, "message": message}}),
            headers: Vec::new(),
        }
    }

    /// 400 `invalid_request_error`.
    pub fn invalid(code: Option<&str>, param: Option<&str>, message: String) -> Self {
        Self::v1(StatusCode::BAD_REQUEST, "invalid_request_error", code, param, message)
    }

    pub fn missing(param: &str) -> Self {
        Self::invalid(Some("parameter_missing"), Some(param), format!("Missing required param: {param}."))
    }

    pub fn unknown_param(param: &str) -> Self {
        Self::invalid(Some("parameter_unknown"), Some(param), format!("Received unknown parameter: {param}"))
    }

    pub fn invalid_integer(param: &str, got: &str) -> Self {
        Self::invalid(Some("parameter_invalid_integer"), Some(param), format!("Invalid integer: {got}"))
    }

    pub fn too_long(param: &str, got: &str, max: usize) -> Self {
        Self::invalid(None, Some(param), format!("Invalid string: {got}; must be at most {max} characters"))
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::v1(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            Some("id"),
            format!("No such {what}: '{id}'"),
        )
    }

    /// The global rate limiter said no.
    pub fn rate_limited() -> Self {
        Self::v1(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_request_error",
            Some("rate_limit"),
            None,
            "Request rate limit exceeded. Learn more about rate limits here https://docs.stripe.com/rate-limits."
                .into(),
        )
        .header("Stripe-Rate-Limited-Reason", "global-rate")
    }

    /// Another call for the same customer and meter is in flight.
    pub fn concurrency_limited() -> Self {
        Self::v1(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_request_error",
            Some("rate_limit"),
            None,
            "This request was rate limited because another request for the same customer and meter is still \
             in progress. Make one request at a time for each customer and meter. Learn more about rate limits \
             here https://docs.stripe.com/rate-limits."
                .into(),
        )
        .header("Stripe-Rate-Limited-Reason", "endpoint-concurrency")
    }

    /// An injected internal error that is safe to retry.
    pub fn server_error() -> Self {
        Self::v1(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            None,
            None,
            "An unknown error occurred while processing your request. Please retry.".into(),
        )
        .header("Stripe-Should-Retry", "true")
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body)).into_response();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}

/// What the `Authorization` header held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    None,
    /// The header was there but held no key (`"Bearer"`, `"Bearer "`).
    Empty(String),
    Key(String),
}

/// Read `Authorization: Bearer <key>` or `Basic base64(<key>:)`.
pub fn credential(headers: &HeaderMap) -> Credential {
    let Some(raw) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Credential::None;
    };
    let raw = raw.trim();
    let (scheme, rest) = raw.split_once(' ').unwrap_or((raw, ""));
    let rest = rest.trim();
    let key = if scheme.eq_ignore_ascii_case("bearer") {
        rest.to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(|s| s.split_once(':').map(|(user, _)| user.to_owned()).unwrap_or(s))
            .unwrap_or_default()
    } else {
        String::new()
    };
    if key.is_empty() { Credential::Empty(raw.to_owned()) } else { Credential::Key(key) }
}

/// The 401 for a missing key, in Stripe's words.
pub fn no_key(header: Option<&str>) -> ApiError {
    let message = match header {
        None => "You did not provide an API key. You need to provide your API key in the Authorization header, \
                 using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See \
                 https://stripe.com/docs/api#authentication for details, or we can help at \
                 https://support.stripe.com/."
            .to_owned(),
        Some(h) => format!(
            "You did not provide an API key, though you did set your Authorization header to \"{h}\". Using \
             Bearer auth, your Authorization header should look something like 'Authorization: Bearer \
             YOUR_SECRET_KEY'. See https://stripe.com/docs/api#authentication for details, or we can help at \
             https://support.stripe.com/."
        ),
    };
    ApiError::v1(StatusCode::UNAUTHORIZED, "invalid_request_error", None, None, message)
}

/// The 401 for a wrong key: the key is shown with all but its prefix and last
/// four characters masked.
pub fn bad_key(key: &str) -> ApiError {
    ApiError::v1(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        None,
        None,
        format!("Invalid API Key provided: {}", mask_key(key)),
    )
}

pub fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let prefix = ["sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_"]
        .iter()
        .find(|p| key.starts_with(**p))
        .map(|p| p.len())
        .unwrap_or(0);
    if chars.len() <= prefix + 4 {
        return key.to_owned();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{}{}{}", &key[..prefix], "*".repeat(chars.len() - prefix - 4), tail)
}

/// Form parameters, keys as sent (`payload[value]`, `expand[]`, `cancel[identifier]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Form {
    pub pairs: Vec<(String, String)>,
}

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form { pairs: form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect() }
    }

    /// The last value of a flat key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `prefix[inner]` pairs as `inner → value` (later values win).
    pub fn nested(&self, prefix: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.pairs {
            if let Some(inner) =
                k.strip_prefix(prefix).and_then(|r| r.strip_prefix('[')).and_then(|r| r.strip_suffix(']'))
            {
                out.insert(inner.to_owned(), v.clone());
            }
        }
        out
    }

    /// Whether any key is `name` or starts with `name[`.
    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| top_level(k) == name)
    }

    /// The first top-level key not in `allowed`.
    pub fn unknown(&self, allowed: &[&str]) -> Option<String> {
        self.pairs.iter().map(|(k, _)| top_level(k)).find(|k| !allowed.contains(k)).map(str::to_owned)
    }

    /// Order-independent fingerprint for idempotency comparisons.
    pub fn fingerprint(&self) -> String {
        let mut pairs = self.pairs.clone();
        pairs.sort();
        pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
    }

    /// An optional integer parameter.
    pub fn integer(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(s) => s.trim().parse::<i64>().map(Some).map_err(|_| ApiError::invalid_integer(key, s)),
        }
    }
}

fn top_level(key: &str) -> &str {
    key.split('[').next().unwrap_or(key)
}

/// Query-string parameters use the same encoding as forms.
pub fn query(uri: &http::Uri) -> Form {
    Form::parse(uri.query().unwrap_or("").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h), Credential::None);
        h.insert("authorization", HeaderValue::from_static("Bearer sk_test_abc"));
        assert_eq!(credential(&h), Credential::Key("sk_test_abc".into()));
        // Basic with the key as user and an empty password
        h.insert("authorization", HeaderValue::from_static("Basic c2tfdGVzdF9hYmM6"));
        assert_eq!(credential(&h), Credential::Key("sk_test_abc".into()));
        h.insert("authorization", HeaderValue::from_static("Bearer"));
        assert_eq!(credential(&h), Credential::Empty("Bearer".into()));
    }

    #[test]
    fn masks_keys_like_stripe() {
        assert_eq!(mask_key("sk_test_1234567890abcd"), "sk_test_**********abcd");
        assert_eq!(mask_key("short"), "*hort");
        assert_eq!(mask_key("sk_test_abc"), "sk_test_abc");
    }

    #[test]
    fn forms() {
        let f = Form::parse(b"event_name=tokens&payload%5Bvalue%5D=5&payload[stripe_customer_id]=cus_1&expand[]=x");
        assert_eq!(f.get("event_name"), Some("tokens"));
        let p = f.nested("payload");
        assert_eq!(p.get("value").map(String::as_str), Some("5"));
        assert_eq!(p.get("stripe_customer_id").map(String::as_str), Some("cus_1"));
        assert!(f.has("payload"));
        assert_eq!(f.unknown(&["event_name", "payload"]), Some("expand".into()));
        let g = Form::parse(b"payload[stripe_customer_id]=cus_1&expand[]=x&payload%5Bvalue%5D=5&event_name=tokens");
        assert_eq!(f.fingerprint(), g.fingerprint());
        assert!(Form::parse(b"timestamp=abc").integer("timestamp").is_err());
    }

    #[test]
    fn error_shape() {
        let e = ApiError::missing("event_name");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body["error"]["type"], "invalid_request_error");
        assert_eq!(e.body["error"]["code"], "parameter_missing");
        assert_eq!(e.body["error"]["param"], "event_name");
        assert_eq!(e.body["error"]["doc_url"], "https://stripe.com/docs/error-codes/parameter-missing");
    }
}
