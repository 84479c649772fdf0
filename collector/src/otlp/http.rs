//! OTLP/HTTP: `POST /v1/traces`, `/v1/logs`, `/v1/metrics`, protobuf or
//! JSON, identity/gzip/zstd, chunked or not. Errors carry a
//! `google.rpc.Status` in the request's encoding, as the OTLP spec asks.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tally_core::{Transport, metric_names, metric_names::reason};

use crate::{
    Ingest, IngestError, OtlpConfig, RequestContext,
    otlp::{
        body::{BodyError, Encoding, compress, decode_json, decode_protobuf, decompress},
        rpc_status::RpcStatus,
        signal::{Logs, Metrics, OtlpSignal, Traces},
    },
};

struct HttpState {
    ingest: Arc<Ingest>,
    max_request_bytes: usize,
    max_compressed_request_bytes: usize,
    retry_after: HeaderValue,
    request_timeout: Duration,
}

/// The OTLP/HTTP routes.
pub fn http_router(ingest: Arc<Ingest>, config: &OtlpConfig) -> Router {
    let state = Arc::new(HttpState {
        ingest,
        max_request_bytes: config.max_request_bytes,
        max_compressed_request_bytes: config.max_compressed_request_bytes,
        retry_after: HeaderValue::from(config.retry_after_secs),
        request_timeout: config.request_timeout,
    });
    Router::new()
        .route(Traces::HTTP_PATH, post(export::<Traces>))
        .route(Logs::HTTP_PATH, post(export::<Logs>))
        .route(Metrics::HTTP_PATH, post(export::<Metrics>))
        .with_state(state)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        })
    }
}

/// An error answer: HTTP status, the `reason` label, and the message for
/// the client.
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { status, reason, message: message.into() }
    }
}

impl From<crate::auth::AuthError> for Refusal {
    fn from(e: crate::auth::AuthError) -> Refusal {
        Refusal::new(e.http_status(), reason::UNAUTHENTICATED, e.to_string())
    }
}

impl From<IngestError> for Refusal {
    fn from(e: IngestError) -> Refusal {
        Refusal::new(e.http_status(), e.reason(), e.to_string())
    }
}

impl From<BodyError> for Refusal {
    fn from(e: BodyError) -> Refusal {
        let (status, why) = match e {
            _ if e.is_too_large() => (StatusCode::PAYLOAD_TOO_LARGE, reason::TOO_LARGE),
            BodyError::JsonEmpty { .. } => (StatusCode::BAD_REQUEST, reason::EMPTY),
            _ => (StatusCode::BAD_REQUEST, reason::MALFORMED),
        };
        Refusal::new(status, why, e.to_string())
    }
}

async fn export<S: OtlpSignal>(
    State(st): State<Arc<HttpState>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let peer = peer.map(|axum::Extension(c)| c.0);
    let start = Instant::now();
    let format = match media_type(&headers).map(|m| m.to_ascii_lowercase()).as_deref() {
        Some("application/x-protobuf") | Some("application/protobuf") => Format::Protobuf,
        Some("application/json") => Format::Json,
        other => {
            let msg = format!(
                "unsupported content type {:?}: use application/x-protobuf or application/json",
                other.unwrap_or("")
            );
            // The client's format is unknown: answer in JSON, readable by people.
            return refuse::<S>(
                &st,
                Format::Json,
                Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, reason::UNSUPPORTED_MEDIA_TYPE, msg),
            );
        }
    };
    let response = match handle::<S>(&st, &headers, body, format, peer).await {
        Ok(response) => response,
        Err(refusal) => refuse::<S>(&st, format, refusal),
    };
    metrics::histogram!(metric_names::REQUEST_DURATION, "signal" => S::SIGNAL.as_str(), "transport" => "http")
        .record(start.elapsed().as_secs_f64());
    response
}

async fn handle<S: OtlpSignal>(
    st: &HttpState,
    headers: &HeaderMap,
    body: Body,
    format: Format,
    peer: Option<std::net::SocketAddr>,
) -> Result<Response, Refusal> {
    let encoding_header = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    let encoding = Encoding::parse(encoding_header).ok_or_else(|| {
        Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            reason::UNSUPPORTED_ENCODING,
            format!("unsupported content encoding {:?}: use gzip, zstd or none", encoding_header.unwrap_or("")),
        )
    })?;
    let wire_limit = match encoding {
        Encoding::Identity => st.max_request_bytes,
        _ => st.max_compressed_request_bytes,
    };
    let principal = st.ingest.authenticate(crate::auth::authorization(headers)).await?;
    // Admitted before the body is read (and after authentication), held until answered.
    let _admitted = st.ingest.admit(&crate::caller_key(principal.as_ref(), peer)).await?;
    let body =
        tokio::time::timeout(st.request_timeout, read_body(body, headers, wire_limit)).await.map_err(|_| {
            Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                reason::TIMEOUT,
                format!("request body not received within otlp.request_timeout ({:?})", st.request_timeout),
            )
        })??;
    let body = decompress(body, encoding, st.max_request_bytes)?;
    metrics::counter!(metric_names::RECEIVED_BYTES, "signal" => S::SIGNAL.as_str(), "transport" => "http")
        .increment(body.len() as u64);
    let req = match format {
        Format::Protobuf => decode_protobuf::<S>(&body, st.ingest.decode_limits())?,
        Format::Json => decode_json::<S>(&body, st.ingest.decode_limits())?,
    };
    let ctx = RequestContext {
        principal,
        header_tenant: st
            .ingest
            .resolver()
            .header_name()
            .and_then(|h| headers.get(h))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
    };
    let accepted = st.ingest.export::<S>(req, body.len(), &ctx, Transport::Http).await?;
    let response = S::response(accepted.rejected as i64, accepted.message);
    let body = match format {
        Format::Protobuf => prost::Message::encode_to_vec(&response),
        // Full success is `{}` (serde would write `"partialSuccess":null`).
        Format::Json if S::rejected(&response) == 0 && prost::Message::encoded_len(&response) == 0 => b"{}".to_vec(),
        Format::Json => serde_json::to_vec(&response).unwrap_or_default(),
    };
    let compressed = response_encoding(encoding, headers).and_then(|e| Some((compress(&body, e)?, e.as_str())));
    let mut response = match compressed {
        Some((body, name)) => (
            [(header::CONTENT_TYPE, format.content_type()), (header::CONTENT_ENCODING, HeaderValue::from_static(name))],
            body,
        )
            .into_response(),
        None => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
    };
    response.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    Ok(response)
}

/// The request's own content encoding, if the client accepts it back
/// (`Accept-Encoding`): OTLP/HTTP answers in the request's encoding.
fn response_encoding(encoding: Encoding, headers: &HeaderMap) -> Option<Encoding> {
    if encoding == Encoding::Identity {
        return None;
    }
    let name = encoding.as_str();
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let coding = parts.next().unwrap_or("").trim();
            // `gzip;q=0` means "not gzip".
            let refused =
                parts.any(|p| p.trim().strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>() == Ok(0.0)));
            (coding.eq_ignore_ascii_case(name) || coding == "*") && !refused
        })
        .then_some(encoding)
}

/// Reads at most `limit` bytes of body, refusing at once when the declared
/// length is over it.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, Refusal> {
    let too_large = || Refusal::from(BodyError::TooLarge { limit, decompressed: false });
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => {
            Err(Refusal::new(StatusCode::BAD_REQUEST, reason::MALFORMED, format!("cannot read request body: {e}")))
        }
    }
}

fn media_type(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or("").trim())
}

fn refuse<S: OtlpSignal>(st: &HttpState, format: Format, r: Refusal) -> Response {
    metrics::counter!(metric_names::REFUSED_REQUESTS, "signal" => S::SIGNAL.as_str(), "transport" => "http", "reason" => r.reason)
        .increment(1);
    tracing::debug!(signal = S::SIGNAL.as_str(), status = r.status.as_u16(), reason = r.reason, message = %r.message, "refused otlp/http request");
    let code = match r.status {
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => tonic::Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
        StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
        _ => tonic::Code::InvalidArgument,
    };
    let status = RpcStatus { code: code as i32, message: r.message, details: Vec::new() };
    let body = match format {
        Format::Protobuf => prost::Message::encode_to_vec(&status),
        Format::Json => serde_json::to_vec(&status).unwrap_or_default(),
    };
    let mut response = (r.status, [(header::CONTENT_TYPE, format.content_type())], body).into_response();
    if r.status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if matches!(r.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
        response.headers_mut().insert(header::RETRY_AFTER, st.retry_after.clone());
    }
    response
}
