//! Protobuf encoding of the OTLP trace messages this adapter sends, written straight
//! into byte buffers.
//!
//! A span is encoded once, on the Report path, into the one buffer it is queued as;
//! the export task then only copies each span's bytes into the batch's
//! `ExportTraceServiceRequest`. Building `opentelemetry-proto`'s message structs instead
//! would allocate a string or vector for every id, attribute key and value and event
//! (about thirty per span), and the encoding is the same: the tests decode what is sent
//! with those structs and compare every field.
//!
//! Field numbers are those of `opentelemetry/proto/trace/v1/trace.proto`,
//! `common/v1/common.proto`, `resource/v1/resource.proto` and
//! `collector/trace/v1/trace_service.proto`.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// `ExportTraceServiceRequest.resource_spans`.
pub const REQUEST_RESOURCE_SPANS: u32 = 1;
/// `ResourceSpans` fields.
pub const RESOURCE_SPANS_RESOURCE: u32 = 1;
pub const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
/// `Resource.attributes`.
pub const RESOURCE_ATTRIBUTES: u32 = 1;
/// `ScopeSpans` fields.
pub const SCOPE_SPANS_SCOPE: u32 = 1;
pub const SCOPE_SPANS_SPANS: u32 = 2;
/// `InstrumentationScope` fields.
pub const SCOPE_NAME: u32 = 1;
pub const SCOPE_VERSION: u32 = 2;
/// `Span` fields.
pub const SPAN_TRACE_ID: u32 = 1;
pub const SPAN_SPAN_ID: u32 = 2;
pub const SPAN_PARENT_SPAN_ID: u32 = 4;
pub const SPAN_NAME: u32 = 5;
pub const SPAN_KIND: u32 = 6;
pub const SPAN_START_TIME: u32 = 7;
pub const SPAN_END_TIME: u32 = 8;
pub const SPAN_ATTRIBUTES: u32 = 9;
pub const SPAN_EVENTS: u32 = 11;
pub const SPAN_STATUS: u32 = 15;
pub const SPAN_FLAGS: u32 = 16;
/// `Span.Event` fields.
pub const EVENT_TIME: u32 = 1;
pub const EVENT_NAME: u32 = 2;
pub const EVENT_ATTRIBUTES: u32 = 3;
/// `Status` fields.
pub const STATUS_MESSAGE: u32 = 2;
pub const STATUS_CODE: u32 = 3;
/// `KeyValue` fields.
pub const KEY_VALUE_KEY: u32 = 1;
pub const KEY_VALUE_VALUE: u32 = 2;
/// `AnyValue` fields (a oneof: written even when empty or zero).
pub const ANY_STRING: u32 = 1;
pub const ANY_INT: u32 = 3;
pub const ANY_DOUBLE: u32 = 4;
pub const ANY_ARRAY: u32 = 5;
/// `ArrayValue.values`.
pub const ARRAY_VALUES: u32 = 1;

/// `Span.SpanKind` values.
pub const KIND_SERVER: u64 = 2;
pub const KIND_CLIENT: u64 = 3;
/// `Status.StatusCode` values.
pub const STATUS_OK: u64 = 1;
pub const STATUS_ERROR: u64 = 2;
/// `SpanFlags` bits above the W3C trace flags: whether the parent is known to be
/// remote, and whether it is.
pub const FLAG_SAMPLED: u32 = 0x01;
pub const FLAG_HAS_IS_REMOTE: u32 = 0x100;
pub const FLAG_IS_REMOTE: u32 = 0x200;

/// Appends a varint field.
pub fn varint(buf: &mut Vec<u8>, field: u32, v: u64) {
    encode_key(field, WireType::Varint, buf);
    encode_varint(v, buf);
}

/// Appends a fixed64 field.
pub fn fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    encode_key(field, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Appends a fixed32 field.
pub fn fixed32(buf: &mut Vec<u8>, field: u32, v: u32) {
    encode_key(field, WireType::ThirtyTwoBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Appends a bytes or string field.
pub fn bytes(buf: &mut Vec<u8>, field: u32, v: &[u8]) {
    encode_key(field, WireType::LengthDelimited, buf);
    encode_varint(v.len() as u64, buf);
    buf.extend_from_slice(v);
}

/// Appends the key and length of a length-delimited field of `len` bytes, whose
/// contents the caller appends next.
pub fn header(buf: &mut Vec<u8>, field: u32, len: usize) {
    encode_key(field, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// The encoded size of a length-delimited field of `len` bytes (fields 1 to 15, whose
/// key is one byte).
pub fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Appends a length-delimited field whose contents `body` writes. The length is not
/// known before, so one byte is reserved for it (enough for the small messages that
/// make up a span) and the contents are moved when it needs more.
pub fn nested(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    encode_key(field, WireType::LengthDelimited, buf);
    let at = buf.len();
    buf.push(0);
    body(buf);
    let len = buf.len() - at - 1;
    if len < 0x80 {
        // A varint below 128 is that byte.
        buf[at] = len as u8;
        return;
    }
    let width = encoded_len_varint(len as u64);
    let end = buf.len();
    buf.resize(end + width - 1, 0);
    buf.copy_within(at + 1..end, at + width);
    let mut prefix = [0u8; 10];
    let mut slot = &mut prefix[..];
    encode_varint(len as u64, &mut slot);
    buf[at..at + width].copy_from_slice(&prefix[..width]);
}

/// Appends a `KeyValue` field whose `AnyValue` `value` writes.
pub fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: impl FnOnce(&mut Vec<u8>)) {
    nested(buf, field, |kv| {
        bytes(kv, KEY_VALUE_KEY, key.as_bytes());
        nested(kv, KEY_VALUE_VALUE, value);
    });
}

/// `AnyValue` contents: a string.
pub fn any_string(buf: &mut Vec<u8>, v: &str) {
    bytes(buf, ANY_STRING, v.as_bytes());
}

/// `AnyValue` contents: an int64 (negative numbers take ten bytes, as in protobuf).
pub fn any_int(buf: &mut Vec<u8>, v: i64) {
    varint(buf, ANY_INT, v as u64);
}

/// `AnyValue` contents: a double.
pub fn any_double(buf: &mut Vec<u8>, v: f64) {
    fixed64(buf, ANY_DOUBLE, v.to_bits());
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use prost::Message;

    #[test]
    fn nested_lengths_of_every_width_decode() {
        for len in [0usize, 1, 100, 127, 128, 300, 16_383, 16_384, 70_000] {
            let text = "x".repeat(len);
            let mut buf = vec![0xAA];
            key_value(&mut buf, 1, "k", |v| any_string(v, &text));
            // After the marker and the field's key: the length, then the message.
            let decoded = KeyValue::decode_length_delimited(&buf[2..]).unwrap();
            assert_eq!(buf[0], 0xAA);
            assert_eq!(
                decoded.value,
                Some(AnyValue {
                    value: Some(any_value::Value::StringValue(text))
                }),
                "{len}"
            );
        }
    }

    #[test]
    fn scalars_decode_as_prost_encodes_them() {
        for (write, expected) in [
            (
                Box::new(|b: &mut Vec<u8>| any_int(b, -5)) as Box<dyn Fn(&mut Vec<u8>)>,
                any_value::Value::IntValue(-5),
            ),
            (Box::new(|b| any_int(b, 0)), any_value::Value::IntValue(0)),
            (
                Box::new(|b| any_double(b, -0.25)),
                any_value::Value::DoubleValue(-0.25),
            ),
            (
                Box::new(|b| any_string(b, "")),
                any_value::Value::StringValue(String::new()),
            ),
        ] {
            let mut buf = Vec::new();
            write(&mut buf);
            let v = AnyValue::decode(&buf[..]).unwrap();
            assert_eq!(v.value, Some(expected.clone()));
            assert_eq!(
                buf,
                AnyValue {
                    value: Some(expected)
                }
                .encode_to_vec()
            );
        }
    }
}
