//! The protobuf walk: the wire format read against the OTLP schema.

use super::{BudgetError, Cost, DecodeLimits, Field, MAX_DEPTH, Msg, Tally};

/// Walks `body` as a `root` message, refusing it once it exceeds `limits`.
/// `noun` names the items in the error ("spans").
pub fn check(body: &[u8], root: Msg, limits: DecodeLimits, noun: &'static str) -> Result<Cost, BudgetError> {
    let mut tally = Tally::new(limits, noun);
    tally.message(root, false)?;
    message(&mut tally, body, root, 0)?;
    Ok(tally.cost)
}

fn message(tally: &mut Tally, mut buf: &[u8], msg: Msg, depth: u32) -> Result<(), BudgetError> {
    if depth > MAX_DEPTH {
        return Err(BudgetError::Malformed("message nesting too deep"));
    }
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (field, wire) = ((key >> 3) as u32, key & 7);
        if field == 0 {
            return Err(BudgetError::Malformed("field number 0"));
        }
        let kind = msg.field(field);
        match wire {
            0 => {
                varint(&mut buf)?;
                if matches!(kind, Field::Numbers(_)) {
                    tally.numbers(1)?;
                }
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                buf = buf.get(n..).ok_or(BudgetError::Malformed("truncated fixed-width field"))?;
                if matches!(kind, Field::Numbers(_)) {
                    tally.numbers(1)?;
                }
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| BudgetError::Malformed("length"))?;
                let body = buf.get(..len).ok_or(BudgetError::Malformed("truncated length-delimited field"))?;
                buf = &buf[len..];
                match kind {
                    Field::Message(child, repeated) => {
                        tally.message(child, repeated)?;
                        message(tally, body, child, depth + 1)?;
                    }
                    // Packed: 8 bytes per fixed-width number, one varint per
                    // byte below 0x80 (each varint ends with one).
                    Field::Numbers(fixed) => {
                        let n = if fixed { body.len() / 8 } else { body.iter().filter(|b| **b < 0x80).count() };
                        tally.numbers(n)?;
                    }
                    Field::Strings => tally.string_element(len)?,
                    Field::Other => tally.bytes(len as u64)?,
                }
            }
            _ => return Err(BudgetError::Malformed("unsupported wire type")),
        }
    }
    Ok(())
}

fn varint(buf: &mut &[u8]) -> Result<u64, BudgetError> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(BudgetError::Malformed("truncated varint"))?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(BudgetError::Malformed("varint longer than 10 bytes"))
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use tally_core::otlp::collector::trace::v1::ExportTraceServiceRequest;

    use std::mem::size_of;

    use tally_core::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;

    fn spans(n: usize, each: Span) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![each; n], ..Default::default() }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn empty_spans_are_counted_before_they_are_decoded() {
        let body = spans(1000, Span::default());
        assert!(body.len() < 2100, "{}", body.len());
        let cost = check(&body, Msg::TraceRequest, DecodeLimits::NONE, "spans").unwrap();
        assert_eq!(cost.items, 1000);
        assert!(cost.bytes >= 1000 * size_of::<Span>() as u64, "{cost:?}");
        let limits = DecodeLimits { max_items: 999, max_decoded_bytes: u64::MAX };
        assert_eq!(
            check(&body, Msg::TraceRequest, limits, "spans"),
            Err(BudgetError::TooManyItems { limit: 999, noun: "spans" })
        );
        let limits = DecodeLimits { max_items: u64::MAX, max_decoded_bytes: 100_000 };
        assert_eq!(check(&body, Msg::TraceRequest, limits, "spans"), Err(BudgetError::TooLarge { limit: 100_000 }));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        for bad in [&[0x0a, 0xff][..], &[0x08], &[0x0b, 0x00], &[0x00], &[0x0a; 200]] {
            assert!(matches!(
                check(bad, Msg::TraceRequest, DecodeLimits::NONE, "spans"),
                Err(BudgetError::Malformed(_))
            ));
        }
    }
}
