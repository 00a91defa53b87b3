//! The gRPC codec: prost, except that
//!
//! * a request that is not valid protobuf is answered with INVALID_ARGUMENT (the caller sent
//!   bad input) rather than tonic's INTERNAL (which reads as a server fault and, for Envoy's
//!   client, as a reason to retry);
//! * a message is decoded from one contiguous buffer, after a [`Prescan`] of its bytes has
//!   checked the counts that would make decoding cost far more memory than the message
//!   (a Report of half a million empty attribute sets is 1 MiB on the wire, but hundreds of
//!   MiB as decoded messages).

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, Bytes};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstEncoder};

use super::pb::istio::mixer::v1::{CheckRequest, CheckResponse, ReportRequest, ReportResponse};
use super::view::{CheckView, ReportView};

/// `--max-report-attribute-sets`, for the prescan (the codec is built by generated code,
/// which passes it no state). Set once at server start.
static MAX_REPORT_SETS: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Sets the largest number of attribute sets a Report may carry.
pub fn set_max_report_sets(max: usize) {
    MAX_REPORT_SETS.store(max, Ordering::Relaxed);
}

/// A cheap look at a message's bytes before prost decodes it.
pub trait Prescan {
    /// An error when decoding `bytes` would exceed a limit.
    fn prescan(_bytes: &[u8]) -> Result<(), Status> {
        Ok(())
    }
}

impl Prescan for CheckRequest {}
impl Prescan for CheckResponse {}
impl Prescan for ReportResponse {}

impl Prescan for ReportRequest {
    fn prescan(bytes: &[u8]) -> Result<(), Status> {
        let max = MAX_REPORT_SETS.load(Ordering::Relaxed);
        // Field 1 (`attributes`), length-delimited.
        let sets = count_field(bytes, 1, max.saturating_add(1));
        if sets > max {
            return Err(Status::resource_exhausted(format!(
                "Report carries more than {max} attribute sets (the limit set by --max-report-attribute-sets)"
            )));
        }
        Ok(())
    }
}

/// Counts the top-level occurrences of length-delimited field `field` in a protobuf message,
/// stopping at `stop`. Malformed input ends the count early: prost reports it precisely.
fn count_field(mut bytes: &[u8], field: u64, stop: usize) -> usize {
    let mut count = 0;
    while !bytes.is_empty() && count < stop {
        let Ok(key) = prost::encoding::decode_varint(&mut bytes) else {
            break;
        };
        let skipped = match key & 7 {
            0 => prost::encoding::decode_varint(&mut bytes).map(|_| 0),
            1 => Ok(8),
            2 => {
                if key >> 3 == field {
                    count += 1;
                }
                prost::encoding::decode_varint(&mut bytes)
                    .map(|len| usize::try_from(len).unwrap_or(usize::MAX))
            }
            5 => Ok(4),
            _ => break,
        };
        match skipped {
            Ok(n) if n <= bytes.len() => bytes.advance(n),
            _ => break,
        }
    }
    count
}

/// prost encoding with precise decode errors.
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        StrictCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Prescan + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(std::marker::PhantomData)
    }
}

/// Decodes with prost from contiguous bytes; a malformed message is INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct StrictDecoder<U>(std::marker::PhantomData<U>);

impl<U: prost::Message + Prescan + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // Splits the message off tonic's buffer without copying when it is in one piece.
        let bytes: Bytes = buf.copy_to_bytes(buf.remaining());
        U::prescan(&bytes)?;
        U::decode(bytes).map(Some).map_err(malformed)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// A malformed message is the caller's fault.
fn malformed(e: prost::DecodeError) -> Status {
    Status::new(
        Code::InvalidArgument,
        format!("malformed protobuf message: failed to decode Protobuf message: {e}"),
    )
}

/// A request type the server decodes from the message's bytes.
pub trait FromWire: Sized {
    /// Decodes one message, after its [`Prescan`].
    fn from_wire(bytes: Bytes) -> Result<Self, Status>;
}

impl FromWire for CheckView {
    fn from_wire(bytes: Bytes) -> Result<Self, Status> {
        CheckRequest::prescan(&bytes)?;
        CheckView::decode(bytes).map_err(malformed)
    }
}

impl FromWire for ReportView {
    fn from_wire(bytes: Bytes) -> Result<Self, Status> {
        ReportRequest::prescan(&bytes)?;
        ReportView::decode(bytes).map_err(malformed)
    }
}

/// The server's codec: prost encoding, requests decoded by [`FromWire`] with the same
/// errors as [`StrictCodec`].
#[derive(Debug, Clone)]
pub struct ViewCodec<T, U>(ProstCodec<T, T>, std::marker::PhantomData<U>);

impl<T, U> Default for ViewCodec<T, U> {
    fn default() -> Self {
        ViewCodec(ProstCodec::default(), std::marker::PhantomData)
    }
}

impl<T, U> Codec for ViewCodec<T, U>
where
    T: prost::Message + Default + Send + 'static,
    U: FromWire + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ViewDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ViewDecoder(std::marker::PhantomData)
    }
}

/// Decodes with [`FromWire`] from contiguous bytes.
#[derive(Debug, Clone)]
pub struct ViewDecoder<U>(std::marker::PhantomData<U>);

impl<U: FromWire> Decoder for ViewDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let bytes: Bytes = buf.copy_to_bytes(buf.remaining());
        U::from_wire(bytes).map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// A message already encoded (by a front end that writes its answer straight into
/// bytes), handed to the gRPC encoder as is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded(pub Vec<u8>);

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    /// Only ever encoded; as a message read, every field is unknown and skipped.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn counts_report_sets_without_decoding() {
        let req = ReportRequest {
            attributes: vec![Default::default(); 5],
            default_words: vec![b"w".to_vec()],
            global_word_count: 222,
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        assert_eq!(count_field(&bytes, 1, usize::MAX), 5);
        assert_eq!(count_field(&bytes, 1, 3), 3);
        assert_eq!(count_field(&bytes, 2, usize::MAX), 1);
        // Truncated input stops the count; prost reports the error.
        assert!(count_field(&bytes[..bytes.len() - 1], 1, usize::MAX) <= 5);
    }
}
