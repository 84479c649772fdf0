//! Sending pre-encoded OTLP requests over gRPC or HTTP.

use anyhow::Context;
use bytes::Bytes;
use tally_collector::otlp::OtlpSignal;

use crate::{Compression, LoadgenArgs, Protocol};

/// One connection and how to send a pre-encoded request over it.
pub(crate) enum Sender<S> {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>, tonic::metadata::MetadataMap, std::marker::PhantomData<S>),
    Http(reqwest::Client, String, reqwest::header::HeaderMap),
}

impl<S: OtlpSignal> Sender<S> {
    pub(crate) async fn connect(args: &LoadgenArgs) -> anyhow::Result<Sender<S>> {
        let base = args.endpoint.trim_end_matches('/').to_owned();
        match args.protocol {
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(base.clone())?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .with_context(|| format!("connecting to {base}"))?;
                let mut client = tonic::client::Grpc::new(channel);
                if args.compression == Compression::Gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                let mut md = tonic::metadata::MetadataMap::new();
                for (k, v) in &args.headers {
                    md.insert(tonic::metadata::MetadataKey::from_bytes(k.as_bytes())?, v.parse()?);
                }
                Ok(Sender::Grpc(client, md, std::marker::PhantomData))
            }
            Protocol::Http => {
                let mut headers = reqwest::header::HeaderMap::new();
                headers.insert(reqwest::header::CONTENT_TYPE, "application/x-protobuf".parse()?);
                if args.compression == Compression::Gzip {
                    headers.insert(reqwest::header::CONTENT_ENCODING, "gzip".parse()?);
                }
                for (k, v) in &args.headers {
                    headers.insert(reqwest::header::HeaderName::from_bytes(k.as_bytes())?, v.parse()?);
                }
                let client =
                    reqwest::Client::builder().tcp_nodelay(true).pool_max_idle_per_host(args.concurrency).build()?;
                Ok(Sender::Http(client, format!("{base}{}", S::HTTP_PATH), headers))
            }
        }
    }

    /// Sends one request; `Ok(rejected items)` or `Err(error kind)`.
    pub(crate) async fn send(&mut self, body: Bytes) -> Result<i64, String> {
        match self {
            Sender::Grpc(client, md, _) => {
                client.ready().await.map_err(|e| format!("grpc_connect: {e}"))?;
                let mut req = tonic::Request::new(RawMessage(body));
                *req.metadata_mut() = md.clone();
                let path = http::uri::PathAndQuery::from_static(S::GRPC_PATH);
                match client.unary(req, path, RawCodec::<S::Response>::default()).await {
                    Ok(resp) => Ok(S::rejected(&resp.into_inner())),
                    Err(status) => Err(format!("grpc_{:?}", status.code()).to_lowercase()),
                }
            }
            Sender::Http(client, url, headers) => {
                let resp = client.post(url.as_str()).headers(headers.clone()).body(body).send().await.map_err(|e| {
                    if e.is_connect() { "http_connect".to_owned() } else { "http_transport".to_owned() }
                })?;
                let status = resp.status();
                // tally's own answer to the load it is sent: small.
                #[allow(clippy::disallowed_methods)]
                let bytes = resp.bytes().await.map_err(|_| "http_transport".to_owned())?;
                if !status.is_success() {
                    return Err(format!("http_{}", status.as_u16()));
                }
                let decoded: S::Response = prost::Message::decode(bytes).map_err(|_| "http_bad_response".to_owned())?;
                Ok(S::rejected(&decoded))
            }
        }
    }
}

/// A request already encoded as protobuf.
pub struct RawMessage(pub Bytes);

/// A tonic codec that sends [`RawMessage`]s as they are and decodes the
/// answer as `M`: requests are encoded once, up front.
pub struct RawCodec<M>(std::marker::PhantomData<fn() -> M>);

impl<M> Default for RawCodec<M> {
    fn default() -> Self {
        RawCodec(std::marker::PhantomData)
    }
}

impl<M: prost::Message + Default + Send + 'static> tonic::codec::Codec for RawCodec<M> {
    type Encode = RawMessage;
    type Decode = M;
    type Encoder = RawCodec<M>;
    type Decoder = RawCodec<M>;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec::default()
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec::default()
    }
}

impl<M: Send + 'static> tonic::codec::Encoder for RawCodec<M> {
    type Item = RawMessage;
    type Error = tonic::Status;
    fn encode(&mut self, item: RawMessage, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item.0);
        Ok(())
    }
}

impl<M: prost::Message + Default + Send + 'static> tonic::codec::Decoder for RawCodec<M> {
    type Item = M;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<M>, tonic::Status> {
        M::decode(src).map(Some).map_err(|e| tonic::Status::internal(format!("invalid response: {e}")))
    }
}
