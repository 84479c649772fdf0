//! OTLP/gRPC: the three `Export` services, written once over [`OtlpSignal`].
//!
//! tonic's generated servers decode with prost inside the codec and turn a
//! malformed message into INTERNAL; OTLP wants INVALID_ARGUMENT. So the codec
//! here hands the raw (already decompressed, size-bounded) message to the
//! handler, which decodes it itself.

use std::{
    convert::Infallible,
    marker::PhantomData,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Buf, BufMut, Bytes};
use tally_core::{Transport, metric_names, metric_names::reason};
use tonic::{
    Status,
    body::Body,
    codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder},
    server::{NamedService, UnaryService},
    service::Routes,
};

use crate::{
    Ingest, RequestContext,
    otlp::{
        body::decode_protobuf,
        signal::{Logs, Metrics, OtlpSignal, Traces},
    },
};

/// Builds the gRPC routes for the three OTLP services. A request must be
/// received and handled within `request_timeout`.
pub fn grpc_routes(ingest: Arc<Ingest>, max_request_bytes: usize, request_timeout: Duration) -> Routes {
    let limits = Limits { max_request_bytes, request_timeout };
    Routes::new(OtlpGrpc::<Traces>::new(ingest.clone(), limits))
        .add_service(OtlpGrpc::<Logs>::new(ingest.clone(), limits))
        .add_service(OtlpGrpc::<Metrics>::new(ingest, limits))
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_request_bytes: usize,
    request_timeout: Duration,
}

/// The caller, authenticated before the request was admitted.
#[derive(Clone)]
struct Authenticated(Option<tally_core::Principal>);

/// A message as bytes on the wire.
struct RawMessage(Bytes);

/// A prost message.
struct Proto<M>(M);

/// How one side of a [`WireCodec`] moves its messages.
trait Wire: Sized + Send + 'static {
    fn encode(self, dst: &mut EncodeBuf<'_>);
    fn decode(src: &mut DecodeBuf<'_>) -> Result<Self, Status>;
}

impl Wire for RawMessage {
    fn encode(self, dst: &mut EncodeBuf<'_>) {
        dst.put(self.0);
    }
    fn decode(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        Ok(RawMessage(src.copy_to_bytes(src.remaining())))
    }
}

impl<M: prost::Message + Default + Send + 'static> Wire for Proto<M> {
    fn encode(self, dst: &mut EncodeBuf<'_>) {
        // EncodeBuf grows on demand, so encoding cannot run out of room.
        let _ = self.0.encode(dst);
    }
    fn decode(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        M::decode(src).map(Proto).map_err(|e| Status::invalid_argument(format!("invalid protobuf: {e}")))
    }
}

/// A tonic codec that encodes `E` and decodes `D`.
struct WireCodec<E, D>(PhantomData<fn() -> (E, D)>);

impl<E, D> Default for WireCodec<E, D> {
    fn default() -> Self {
        WireCodec(PhantomData)
    }
}

impl<E: Wire, D: Wire> Codec for WireCodec<E, D> {
    type Encode = E;
    type Decode = D;
    type Encoder = WireCodec<E, D>;
    type Decoder = WireCodec<E, D>;

    fn encoder(&mut self) -> Self::Encoder {
        WireCodec::default()
    }
    fn decoder(&mut self) -> Self::Decoder {
        WireCodec::default()
    }
}

impl<E: Wire, D: Wire> Encoder for WireCodec<E, D> {
    type Item = E;
    type Error = Status;
    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst);
        Ok(())
    }
}

impl<E: Wire, D: Wire> Decoder for WireCodec<E, D> {
    type Item = D;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src).map(Some)
    }
}

/// One OTLP `Export` service.
struct OtlpGrpc<S> {
    ingest: Arc<Ingest>,
    limits: Limits,
    _signal: PhantomData<fn() -> S>,
}

impl<S> Clone for OtlpGrpc<S> {
    fn clone(&self) -> Self {
        OtlpGrpc { ingest: self.ingest.clone(), limits: self.limits, _signal: PhantomData }
    }
}

impl<S: OtlpSignal> OtlpGrpc<S> {
    fn new(ingest: Arc<Ingest>, limits: Limits) -> Self {
        OtlpGrpc { ingest, limits, _signal: PhantomData }
    }

    /// Authenticates, admits, then lets tonic read the message and call
    /// [`UnaryService::call`].
    async fn handle<B>(self, mut req: http::Request<B>) -> http::Response<Body>
    where
        B: http_body::Body + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        // Authenticated before admitted: a request without a valid key never
        // holds one of the slots the others need.
        let authorization = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let principal = match self.ingest.authenticate(authorization).await {
            Ok(p) => p,
            Err(e) => {
                count_refused_request::<S>(reason::UNAUTHENTICATED);
                return e.grpc_status().into_http();
            }
        };
        let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
        let caller = crate::caller_key(principal.as_ref(), peer);
        // Admitted before the message is read, held until answered.
        let _admitted = match self.ingest.admit(&caller).await {
            Ok(admission) => admission,
            Err(e) => {
                count_refused_request::<S>(e.reason());
                return e.grpc_status(self.ingest.retry_after()).into_http();
            }
        };
        req.extensions_mut().insert(Authenticated(principal));
        let mut grpc = tonic::server::Grpc::new(WireCodec::<Proto<S::Response>, RawMessage>::default())
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(self.limits.max_request_bytes);
        let mut res = grpc.unary(self, req).await;
        // Statuses tonic itself answers before the handler runs, mapped
        // to what OTLP clients expect (the handler never answers these):
        // a length prefix over the limit is OUT_OF_RANGE and a message
        // inflating past it RESOURCE_EXHAUSTED → RESOURCE_EXHAUSTED; a
        // corrupt compressed frame is INTERNAL → INVALID_ARGUMENT.
        let status = res.headers().get("grpc-status").and_then(|v| v.to_str().ok());
        let (code, why) = match status {
            Some("11") | Some("8") => ("8", reason::TOO_LARGE),
            Some("13") => ("3", reason::MALFORMED),
            _ => return res,
        };
        res.headers_mut().insert("grpc-status", http::HeaderValue::from_static(code));
        count_refused_request::<S>(why);
        res
    }
}

impl<S: OtlpSignal> NamedService for OtlpGrpc<S> {
    const NAME: &'static str = S::GRPC_SERVICE;
}

type BoxFuture<T, E> = std::pin::Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

impl<S: OtlpSignal, B> tower_service::Service<http::Request<B>> for OtlpGrpc<S>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != S::GRPC_PATH {
            return Box::pin(async { Ok(Status::unimplemented("unknown method").into_http()) });
        }
        let this = self.clone();
        let timeout = self.limits.request_timeout;
        Box::pin(async move {
            // One deadline for receiving and handling the request: a slow
            // or stalled sender is cut off and its slot freed.
            match tokio::time::timeout(timeout, this.handle(req)).await {
                Ok(res) => Ok(res),
                Err(_) => {
                    count_refused_request::<S>(reason::TIMEOUT);
                    let msg = format!("request not received and handled within otlp.request_timeout ({timeout:?})");
                    Ok(Status::deadline_exceeded(msg).into_http())
                }
            }
        })
    }
}

impl<S: OtlpSignal> UnaryService<RawMessage> for OtlpGrpc<S> {
    type Response = Proto<S::Response>;
    type Future = BoxFuture<tonic::Response<Proto<S::Response>>, Status>;

    fn call(&mut self, request: tonic::Request<RawMessage>) -> Self::Future {
        let ingest = self.ingest.clone();
        Box::pin(async move {
            let start = Instant::now();
            let retry_after = ingest.retry_after();
            let principal = request.extensions().get::<Authenticated>().and_then(|a| a.0.clone());
            let ctx = RequestContext {
                principal,
                header_tenant: ingest
                    .resolver()
                    .header_name()
                    .and_then(|h| request.metadata().get(h.as_str()))
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            };
            let body = request.into_inner().0;
            metrics::counter!(metric_names::RECEIVED_BYTES, "signal" => S::SIGNAL.as_str(), "transport" => "grpc")
                .increment(body.len() as u64);
            let req = decode_protobuf::<S>(&body, ingest.decode_limits()).map_err(|e| {
                if e.is_too_large() {
                    count_refused_request::<S>(reason::TOO_LARGE);
                    Status::resource_exhausted(e.to_string())
                } else {
                    count_refused_request::<S>(reason::MALFORMED);
                    Status::invalid_argument(e.to_string())
                }
            })?;
            let result = ingest.export::<S>(req, body.len(), &ctx, Transport::Grpc).await;
            metrics::histogram!(metric_names::REQUEST_DURATION, "signal" => S::SIGNAL.as_str(), "transport" => "grpc")
                .record(start.elapsed().as_secs_f64());
            match result {
                Ok(ok) => Ok(tonic::Response::new(Proto(S::response(ok.rejected as i64, ok.message)))),
                Err(e) => {
                    count_refused_request::<S>(e.reason());
                    Err(e.grpc_status(retry_after))
                }
            }
        })
    }
}

fn count_refused_request<S: OtlpSignal>(why: &'static str) {
    metrics::counter!(metric_names::REFUSED_REQUESTS, "signal" => S::SIGNAL.as_str(), "transport" => "grpc", "reason" => why)
        .increment(1);
}
