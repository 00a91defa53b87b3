//! What the log front ends share at the gRPC level: a codec that looks at a message's
//! bytes before prost decodes it, and a cheap walk over protobuf fields for that look.
//!
//! Their services are written out by hand (`accesslog.rs`, `otlp_logs.rs`) rather than
//! taken from the generated servers, because only a service of our own can choose its
//! codec: the generated ones decode with plain prost, which would answer a malformed
//! message with INTERNAL and would decode a message of half a million empty entries
//! (a few bytes each on the wire, hundreds on the heap) before anyone counted them.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

/// Checks a message's bytes before decoding: an error refuses the message.
pub type Prescan = Arc<dyn Fn(&[u8]) -> Result<(), Status> + Send + Sync>;

/// prost encoding; decoding after a [`Prescan`], with malformed input answered as
/// INVALID_ARGUMENT (the caller sent bad input) instead of tonic's INTERNAL.
pub struct PrescanCodec<T, U> {
    encoder: ProstCodec<T, U>,
    prescan: Prescan,
    what: &'static str,
}

impl<T, U> PrescanCodec<T, U> {
    /// `what` names the message in errors (e.g. `access-log message`).
    pub fn new(prescan: Prescan, what: &'static str) -> PrescanCodec<T, U> {
        PrescanCodec {
            encoder: ProstCodec::default(),
            prescan,
            what,
        }
    }
}

impl<T, U> Codec for PrescanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = PrescanDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.encoder.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        PrescanDecoder {
            prescan: self.prescan.clone(),
            what: self.what,
            _message: PhantomData,
        }
    }
}

pub struct PrescanDecoder<U> {
    prescan: Prescan,
    what: &'static str,
    _message: PhantomData<U>,
}

impl<U: prost::Message + Default> Decoder for PrescanDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // Splits the message off tonic's buffer without copying when it is in one piece.
        let bytes: Bytes = buf.copy_to_bytes(buf.remaining());
        (self.prescan)(&bytes)?;
        U::decode(bytes)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed {}: {e}", self.what)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// The length-delimited fields at the top level of a protobuf message, as
/// `(field number, bytes)`. Malformed input ends the walk early: prost reports it
/// precisely when the message is decoded.
pub fn len_fields(bytes: &[u8]) -> LenFields<'_> {
    LenFields { bytes }
}

pub struct LenFields<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for LenFields<'a> {
    type Item = (u64, &'a [u8]);

    fn next(&mut self) -> Option<(u64, &'a [u8])> {
        while !self.bytes.is_empty() {
            let key = prost::encoding::decode_varint(&mut self.bytes).ok()?;
            let skip = match key & 7 {
                0 => {
                    prost::encoding::decode_varint(&mut self.bytes).ok()?;
                    0
                }
                1 => 8,
                2 => {
                    let len = prost::encoding::decode_varint(&mut self.bytes).ok()?;
                    let len = usize::try_from(len)
                        .ok()
                        .filter(|&n| n <= self.bytes.len())?;
                    let (field, rest) = self.bytes.split_at(len);
                    self.bytes = rest;
                    return Some((key >> 3, field));
                }
                5 => 4,
                _ => return None,
            };
            if skip > self.bytes.len() {
                return None;
            }
            self.bytes = &self.bytes[skip..];
        }
        None
    }
}

/// Occurrences of the length-delimited field at `path` (field numbers from the top
/// level down), counting at most to `stop`.
pub fn count_nested(bytes: &[u8], path: &[u64], stop: usize) -> usize {
    let Some((&first, rest)) = path.split_first() else {
        return 0;
    };
    let mut count = 0;
    for (field, inner) in len_fields(bytes) {
        if count >= stop {
            break;
        }
        if field != first {
            continue;
        }
        count += if rest.is_empty() {
            1
        } else {
            count_nested(inner, rest, stop - count)
        };
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Inner {
        #[prost(string, repeated, tag = "2")]
        items: Vec<String>,
        #[prost(uint64, tag = "1")]
        n: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Outer {
        #[prost(fixed64, tag = "4")]
        f: u64,
        #[prost(message, repeated, tag = "3")]
        inner: Vec<Inner>,
        #[prost(string, tag = "1")]
        name: String,
    }

    #[test]
    fn counts_nested_fields_without_decoding() {
        let inner = |n: usize| Inner {
            items: vec![String::new(); n],
            n: 7,
        };
        let bytes = Outer {
            f: 1,
            inner: vec![inner(3), inner(0), inner(5)],
            name: "x".into(),
        }
        .encode_to_vec();
        assert_eq!(count_nested(&bytes, &[3], usize::MAX), 3);
        assert_eq!(count_nested(&bytes, &[3, 2], usize::MAX), 8);
        assert_eq!(count_nested(&bytes, &[3, 2], 4), 4, "stops at the bound");
        assert_eq!(count_nested(&bytes, &[1], usize::MAX), 1);
        // Truncated input ends the count; it never panics.
        for cut in 0..bytes.len() {
            assert!(count_nested(&bytes[..cut], &[3, 2], usize::MAX) <= 8);
        }
    }
}
