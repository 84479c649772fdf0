//! `google.rpc.Status`: the body of OTLP/HTTP error responses, and the
//! details of gRPC push-back answers. Overloaded is RESOURCE_EXHAUSTED with
//! a `google.rpc.RetryInfo`: the OTLP spec has clients retry that code only
//! when the server says when (Go's exporter drops the data otherwise).

use std::time::Duration;

use prost::Message;

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub(crate) struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// RESOURCE_EXHAUSTED telling the client to retry after `delay`.
pub fn resource_exhausted(message: String, delay: Duration) -> tonic::Status {
    let code = tonic::Code::ResourceExhausted;
    let retry = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: delay.as_secs().min(i64::MAX as u64) as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    let details = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![Any { type_url: RETRY_INFO.into(), value: retry.encode_to_vec() }],
    };
    tonic::Status::with_details(code, message, details.encode_to_vec().into())
}

/// The retry delay a status carries in its `RetryInfo`, if any.
pub fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    let details = RpcStatus::decode(status.details()).ok()?;
    let any = details.details.into_iter().find(|a| a.type_url == RETRY_INFO)?;
    let d = RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay?;
    Some(Duration::new(u64::try_from(d.seconds).ok()?, u32::try_from(d.nanos).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes Python's `googleapis-common-protos` (the reference
    /// google.rpc types) give for `Status{code: 8, message: "full",
    /// details: [Any(RetryInfo{retry_delay: 2.5 s})]}`.
    const REFERENCE: &[u8] = &[
        8, 8, 18, 4, 102, 117, 108, 108, 26, 54, 10, 40, 116, 121, 112, 101, 46, 103, 111, 111, 103, 108, 101, 97, 112,
        105, 115, 46, 99, 111, 109, 47, 103, 111, 111, 103, 108, 101, 46, 114, 112, 99, 46, 82, 101, 116, 114, 121, 73,
        110, 102, 111, 18, 10, 10, 8, 8, 2, 16, 128, 202, 181, 238, 1,
    ];

    #[test]
    fn details_are_what_the_reference_protos_encode() {
        let status = resource_exhausted("full".into(), Duration::from_millis(2500));
        assert_eq!(status.details(), REFERENCE);
    }

    #[test]
    fn the_delay_round_trips_through_the_status_details() {
        let status = resource_exhausted("full".into(), Duration::from_millis(2500));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(retry_delay(&status), Some(Duration::from_millis(2500)));
        assert_eq!(retry_delay(&tonic::Status::unavailable("x")), None);
    }
}
