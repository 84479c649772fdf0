//! The listeners' connection handling, the same on every port: HTTP/1.1
//! and HTTP/2 without TLS (h2c, which gRPC uses) on one socket, a cap on
//! open connections, a deadline for each request's headers, and idle
//! connections closed — so neither many idle sockets nor slow clients can
//! take tally down. Bodies have their deadlines in the handlers that read
//! them (`otlp.request_timeout`, `server.body_timeout`).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{Request, Response, StatusCode},
    response::IntoResponse,
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tally_core::{metric_names, now_ms};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::Instrument;

/// `[server]`: the listeners' connections.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// One-port mode: OTLP/gRPC, OTLP/HTTP and the API all on this address
    /// (HTTP/1.1 and h2c), as Container Apps ingress needs; empty: the
    /// three addresses of `[otlp]` and `[api]`. Env `TALLY_LISTEN_ADDR`.
    #[serde(deserialize_with = "tally_core::lenient::string")]
    pub addr: String,
    /// Connections open at once, per listener; more are closed at once. At
    /// start this is lowered to fit the process's file-descriptor limit.
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Connections with no request in flight and no traffic for this long are closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time a client has to send a request body to the API (`/v1/events`,
    /// webhooks); OTLP bodies have `otlp.request_timeout`.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Longest request target (path and query), in bytes (414 beyond).
    pub max_uri_bytes: usize,
    /// Most header bytes in one request (431 beyond).
    pub max_header_bytes: usize,
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 || self.max_uri_bytes == 0 || self.max_header_bytes == 0 {
            return Err("server.max_connections, max_uri_bytes and max_header_bytes must be greater than 0".into());
        }
        if self.header_read_timeout.is_zero() || self.idle_timeout.is_zero() || self.body_timeout.is_zero() {
            return Err("server.header_read_timeout, idle_timeout and body_timeout must be greater than 0".into());
        }
        if !self.addr.is_empty() && self.addr.parse::<SocketAddr>().is_err() {
            return Err(format!("server.addr: {:?} is not an address like 0.0.0.0:8080", self.addr));
        }
        Ok(())
    }

    /// The limits for each of `listeners` listeners: `max_connections`,
    /// lowered so that all of them together stay within the process's open
    /// files limit (less what the database pools, files and clients need).
    pub fn limits(&self, listeners: usize) -> ConnLimits {
        const RESERVED_FDS: u64 = 256;
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
        let fit = (nofile.saturating_sub(RESERVED_FDS) / listeners.max(1) as u64).max(16) as usize;
        let max_connections = if fit < self.max_connections {
            tracing::warn!(
                configured = self.max_connections,
                open_files_limit = nofile,
                per_listener = fit,
                "server.max_connections lowered to fit the open-files limit (raise `ulimit -n` for more)"
            );
            fit
        } else {
            self.max_connections
        };
        ConnLimits {
            max_connections,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_uri_bytes: self.max_uri_bytes,
            max_header_bytes: self.max_header_bytes,
        }
    }
}

/// What every listener applies to its connections (from [`ServerConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections open at once on this listener; more are closed at once.
    pub max_connections: usize,
    /// Time to send a request's headers (HTTP/1.1).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Longest request target (path and query), in bytes.
    pub max_uri_bytes: usize,
    /// Most header bytes of one request.
    pub max_header_bytes: usize,
}

/// Serves `router` on `listener` until `shutdown`, then lets open
/// connections finish their requests for up to `drain`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    name: &'static str,
    shutdown: CancellationToken,
    drain: Duration,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Headers past our own limit get a JSON 431 from `check_size`;
        // hyper's own limit is the backstop.
        .max_buf_size((limits.max_header_bytes + limits.max_uri_bytes).max(64 << 10) * 2);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size((limits.max_header_bytes * 2) as u32)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let open = metrics::gauge!(metric_names::CONNECTIONS, "listener" => name);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or the peer gave up: wait a
                    // little rather than spin.
                    tracing::warn!(listener = name, error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!(metric_names::CONNECTIONS_REFUSED, "listener" => name).increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        open.increment(1.0);
        let (builder, router, shutdown, open) = (builder.clone(), router.clone(), shutdown.clone(), open.clone());
        tokio::spawn(async move {
            connection(&builder, stream, peer, router, limits, name, shutdown).await;
            open.decrement(1.0);
            drop(slot);
        });
    }
    // Every connection holds a slot: all back means all closed.
    let all = limits.max_connections.max(1) as u32;
    if tokio::time::timeout(drain, slots.acquire_many(all)).await.is_err() {
        tracing::warn!(listener = name, "connections still open after the drain time; closing them");
    }
    Ok(())
}

async fn connection(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnLimits,
    name: &'static str,
    shutdown: CancellationToken,
) {
    let state = Arc::new(ConnState { last_io_ms: AtomicI64::new(now_ms()), in_flight: AtomicUsize::new(0) });
    let io = TokioIo::new(Tracked { inner: stream, state: state.clone() });
    let service = {
        let state = state.clone();
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let (router, state) = (router.clone(), state.clone());
            state.in_flight.fetch_add(1, Ordering::Relaxed);
            // tally's own trace of the request ([self_telemetry]); the path
            // only (queries may carry tenant ids).
            let span = tracing::info_span!(
                "request",
                otel.name = %format_args!("{} {}", req.method(), req.uri().path()),
                otel.kind = "server",
                listener = name,
                http.request.method = %req.method(),
                url.path = %req.uri().path(),
                http.response.status_code = tracing::field::Empty,
            );
            async move {
                let response = match check_size(&req, &limits) {
                    Some(refusal) => refusal,
                    None => router.oneshot(req.map(Body::new)).await.unwrap_or_else(|e| match e {}),
                };
                tracing::Span::current().record("http.response.status_code", response.status().as_u16());
                state.in_flight.fetch_sub(1, Ordering::Relaxed);
                state.touch();
                Ok::<_, std::convert::Infallible>(response)
            }
            .instrument(span)
        })
    };
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let tick = (limits.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(tick), if !closing => {
                if state.idle_for_ms() >= limits.idle_timeout.as_millis() as i64 {
                    metrics::counter!(metric_names::CONNECTIONS_IDLE_CLOSED, "listener" => name).increment(1);
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Request targets and header blocks over the limits get a JSON answer
/// like every other refusal (hyper's own would be an empty 414/431).
fn check_size(req: &Request<Incoming>, limits: &ConnLimits) -> Option<Response<Body>> {
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri > limits.max_uri_bytes {
        let msg =
            format!("request target is {uri} bytes, over the limit of {} (server.max_uri_bytes)", limits.max_uri_bytes);
        return Some(json_error(StatusCode::URI_TOO_LONG, msg));
    }
    let headers: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if headers > limits.max_header_bytes {
        let msg = format!(
            "request headers are {headers} bytes, over the limit of {} (server.max_header_bytes)",
            limits.max_header_bytes
        );
        return Some(json_error(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, msg));
    }
    None
}

fn json_error(status: StatusCode, message: String) -> Response<Body> {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

struct ConnState {
    last_io_ms: AtomicI64,
    in_flight: AtomicUsize,
}

impl ConnState {
    fn touch(&self) {
        self.last_io_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// How long nothing has happened: 0 while a request is in flight.
    fn idle_for_ms(&self) -> i64 {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return 0;
        }
        now_ms() - self.last_io_ms.load(Ordering::Relaxed)
    }
}

/// A socket that notes when bytes last moved.
struct Tracked {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
