//! Request bodies: bounded decompression and the two OTLP encodings.

use std::io::Read;

use bytes::Bytes;

use crate::otlp::{
    budget::{self, BudgetError, DecodeLimits},
    signal::OtlpSignal,
};

/// `Content-Encoding` values tally accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    /// The `Content-Encoding` token.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Zstd => "zstd",
        }
    }

    pub fn parse(header: Option<&str>) -> Option<Encoding> {
        match header.map(|h| h.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Some(Encoding::Identity),
            Some("gzip") | Some("x-gzip") => Some(Encoding::Gzip),
            Some("zstd") => Some(Encoding::Zstd),
            Some(_) => None,
        }
    }
}

/// Why a body could not be turned into a request.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds the limit of {limit} bytes{}", if *.decompressed { " after decompression" } else { "" })]
    TooLarge { limit: usize, decompressed: bool },
    #[error("cannot decompress {encoding} body: {detail}")]
    Decompress { encoding: &'static str, detail: String },
    #[error("invalid protobuf: {0}")]
    Protobuf(String),
    #[error("invalid OTLP/JSON at {path}: {detail}")]
    Json { path: String, detail: String },
    #[error(
        "OTLP/JSON body has no `{field}`: field names are camelCase (`{field}`, not snake_case) \
         and the body must be an Export{{Trace,Logs,Metrics}}ServiceRequest"
    )]
    JsonEmpty { field: &'static str },
    /// Refused before decoding: too many items, too large decoded, or not
    /// protobuf at all.
    #[error("{0}")]
    Budget(#[from] BudgetError),
}

impl BodyError {
    /// Over a size limit (413 / RESOURCE_EXHAUSTED), as opposed to malformed.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            BodyError::TooLarge { .. }
                | BodyError::Budget(BudgetError::TooLarge { .. } | BudgetError::TooManyItems { .. })
        )
    }
}

/// Largest zstd window accepted (2^23 = 8 MiB).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Decompresses `body`, reading at most `limit` bytes of output, so a
/// decompression bomb costs at most `limit` bytes of memory.
pub fn decompress(body: Bytes, encoding: Encoding, limit: usize) -> Result<Bytes, BodyError> {
    let err = |encoding, e: std::io::Error| BodyError::Decompress { encoding, detail: e.to_string() };
    let mut out = Vec::with_capacity((body.len() * 4).min(limit));
    match encoding {
        Encoding::Identity => return Ok(body),
        Encoding::Gzip => flate2::read::MultiGzDecoder::new(&body[..])
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| err("gzip", e))?,
        Encoding::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(&body[..]).map_err(|e| err("zstd", e))?;
            // A frame may ask for a 128 MiB window whatever `limit` is; 8 MiB
            // is what every encoder level up to 19 uses (and what the zstd
            // format asks decoders to support at least).
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(|e| err("zstd", e))?;
            d.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| err("zstd", e))?
        }
    };
    if out.len() > limit {
        return Err(BodyError::TooLarge { limit, decompressed: true });
    }
    Ok(out.into())
}

/// Compresses `body` (responses; the load generator's requests).
pub fn compress(body: &[u8], encoding: Encoding) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Identity => None,
        Encoding::Gzip => {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(body).ok()?;
            e.finish().ok()
        }
        Encoding::Zstd => zstd::encode_all(body, 1).ok(),
    }
}

/// Decodes protobuf, once [`budget`](super::budget) has found that it
/// fits `limits`.
pub fn decode_protobuf<S: OtlpSignal>(body: &[u8], limits: DecodeLimits) -> Result<S::Request, BodyError> {
    budget::protobuf::check(body, S::ROOT, limits, S::NOUN)?;
    prost::Message::decode(body).map_err(|e| BodyError::Protobuf(e.to_string()))
}

/// Decodes OTLP/JSON, naming the path of the first bad field. A non-empty
/// object without the signal's top-level field is refused: it is almost
/// always snake_case keys, which would otherwise decode to nothing.
pub fn decode_json<S: OtlpSignal>(body: &[u8], limits: DecodeLimits) -> Result<S::Request, BodyError> {
    budget::json::check(body, S::ROOT, limits, S::NOUN)?;
    let de = &mut serde_json::Deserializer::from_slice(body);
    let req: S::Request = serde_path_to_error::deserialize(de).map_err(|e| BodyError::Json {
        path: match e.path().to_string() {
            p if p == "." => "the top level".to_owned(),
            p => p,
        },
        detail: e.inner().to_string(),
    })?;
    let trivially_empty = body.iter().filter(|b| !b.is_ascii_whitespace()).eq(b"{}".iter());
    if !trivially_empty && prost::Message::encoded_len(&req) == 0 {
        let field = S::JSON_FIELD;
        // `{"resourceSpans": []}` is a valid empty request.
        let names_field = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
            .is_ok_and(|m| m.contains_key(field));
        if !names_field {
            return Err(BodyError::JsonEmpty { field });
        }
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::otlp::{Logs, Traces};

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap().into()
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 200 << 10);
        let err = decompress(bomb, Encoding::Gzip, 1 << 20).unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { limit, decompressed: true } if limit == 1 << 20));
    }

    #[test]
    fn roundtrips_gzip_and_zstd_within_limit() {
        let data = b"hello otlp".repeat(100);
        assert_eq!(decompress(gzip(&data), Encoding::Gzip, data.len()).unwrap(), &data[..]);
        let z = zstd::encode_all(&data[..], 1).unwrap();
        assert_eq!(decompress(z.into(), Encoding::Zstd, data.len()).unwrap(), &data[..]);
        assert!(decompress(Bytes::from_static(b"not gzip"), Encoding::Gzip, 10).is_err());
    }

    #[test]
    fn zstd_frames_asking_for_huge_windows_are_refused() {
        // A 64 MiB window (long-distance mode) would make the decoder take
        // 64 MiB whatever the output limit.
        let data = vec![7u8; 1 << 20];
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        e.set_parameter(zstd::zstd_safe::CParameter::WindowLog(26)).unwrap();
        e.set_parameter(zstd::zstd_safe::CParameter::EnableLongDistanceMatching(true)).unwrap();
        std::io::Write::write_all(&mut e, &data).unwrap();
        let z = e.finish().unwrap();
        let err = decompress(z.into(), Encoding::Zstd, 2 << 20).unwrap_err();
        assert!(matches!(err, BodyError::Decompress { encoding: "zstd", .. }), "{err:?}");
    }

    #[test]
    fn json_decoder_accepts_spec_json() {
        let body =
            br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"tenant.id","value":{"stringValue":"acme"}}]},
            "scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",
            "spanId":"eee19b7ec3c1b174","name":"GET /","kind":2,"startTimeUnixNano":"1544712660000000000",
            "endTimeUnixNano":1544712661000000000,"attributes":[{"key":"n","value":{"intValue":"42"}}],
            "status":{"code":2}}]}]}]}"#;
        let req = decode_json::<Traces>(body, DecodeLimits::NONE).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(span.kind, 2);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
    }

    #[test]
    fn json_errors_name_the_field() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"eee19b7ec3c1b174"}]}]}]}"#;
        let err = decode_json::<Traces>(body, DecodeLimits::NONE).unwrap_err().to_string();
        assert!(err.contains("resourceSpans[0].scopeSpans[0].spans[0].traceId"), "{err}");
        let err = decode_json::<Traces>(b"{not json", DecodeLimits::NONE).unwrap_err().to_string();
        assert!(err.starts_with("invalid OTLP/JSON"), "{err}");
    }

    #[test]
    fn snake_case_json_is_refused_not_silently_empty() {
        let err = decode_json::<Logs>(br#"{"resource_logs":[{"scope_logs":[]}]}"#, DecodeLimits::NONE).unwrap_err();
        assert!(err.to_string().contains("`resourceLogs`"), "{err}");
        assert!(decode_json::<Logs>(b" { } ", DecodeLimits::NONE).unwrap().resource_logs.is_empty());
        assert!(decode_json::<Logs>(br#"{"resourceLogs":[]}"#, DecodeLimits::NONE).is_ok());
    }

    #[test]
    fn truncated_protobuf_is_an_error() {
        let req = decode_json::<Traces>(
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"x"}]}]}]}"#,
            DecodeLimits::NONE,
        )
        .unwrap();
        let bytes = prost::Message::encode_to_vec(&req);
        assert!(decode_protobuf::<Traces>(&bytes[..bytes.len() - 2], DecodeLimits::NONE).is_err());
        assert_eq!(decode_protobuf::<Traces>(&bytes, DecodeLimits::NONE).unwrap(), req);
    }
}
