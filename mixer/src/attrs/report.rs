//! [`ReportSets`]: the attribute sets of one Report, decoded one at a time.

use std::fmt;

use super::bag::ProtoBag;
use super::error::{DecodeError, DecodeErrorKind, Limit};
use super::limits::DecodeLimits;
use super::table::AttrTable;
use crate::wire::pb::istio::mixer::v1::report_request::RepeatedAttributesSemantics;
use crate::wire::view::ReportView;

/// One attribute set that could not be decoded: its position and why.
#[derive(Clone, Debug)]
pub struct SetError {
    pub index: usize,
    pub error: DecodeError,
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attributes[{}]: {}", self.index, self.error)
    }
}

/// Decodes a Report's sets lazily, so the caller can dispatch them in small chunks and the
/// memory of one call stays bounded whatever the number of sets.
///
/// * INDEPENDENT_ENCODING: each set is decoded by itself.
/// * DELTA_ENCODING: each set's attributes are applied to those accumulated so far; the bag
///   handed out shares its string maps with the accumulator, so a set costs what it
///   carries, not what it inherits.
///
/// A set that fails to decode is an `Err` naming its index; the following sets are still
/// decoded (partial input stays partial). Once the Report's decoded bytes pass
/// [`DecodeLimits::max_report_decoded_bytes`], that is the last item.
pub struct ReportSets<'r, 't> {
    request: &'r ReportView,
    table: &'t AttrTable,
    limits: DecodeLimits,
    delta: bool,
    next: usize,
    accumulated: Option<ProtoBag<'r>>,
    decoded_bytes: usize,
    stopped: bool,
}

impl<'r, 't> ReportSets<'r, 't> {
    /// Checks the Report as a whole (encoding, number of sets) before any set is decoded.
    pub fn new(
        request: &'r ReportView,
        table: &'t AttrTable,
        limits: DecodeLimits,
    ) -> Result<ReportSets<'r, 't>, DecodeError> {
        let semantics = request.repeated_attributes_semantics();
        let delta = if semantics == RepeatedAttributesSemantics::DeltaEncoding as i32 {
            true
        } else if semantics == RepeatedAttributesSemantics::IndependentEncoding as i32 {
            false
        } else {
            return Err(DecodeError::new(DecodeErrorKind::UnknownSemantics {
                value: semantics,
            }));
        };
        limits.check(Limit::ReportSets, request.len())?;
        Ok(ReportSets {
            request,
            table,
            limits,
            delta,
            next: 0,
            accumulated: None,
            decoded_bytes: 0,
            stopped: false,
        })
    }

    /// Number of sets in the Report.
    pub fn len(&self) -> usize {
        self.request.len()
    }

    pub fn is_empty(&self) -> bool {
        self.request.is_empty()
    }

    fn decode(&mut self, index: usize) -> Result<ProtoBag<'r>, DecodeError> {
        let request: &'r ReportView = self.request;
        let Some(set) = request.set(index) else {
            return Ok(ProtoBag::with_limits(self.table, self.limits));
        };
        let words = if set.words().is_empty() {
            request.default_words()
        } else {
            set.words()
        };
        if !self.delta {
            return ProtoBag::decode_wire(set, words, self.table, self.limits);
        }
        match &mut self.accumulated {
            Some(acc) => {
                acc.apply_wire_delta(set, words, self.table)?;
                acc.share_maps();
                Ok(acc.clone())
            }
            None => {
                let mut bag = ProtoBag::decode_wire(set, words, self.table, self.limits)?;
                bag.share_maps();
                self.accumulated = Some(bag.clone());
                Ok(bag)
            }
        }
    }

    fn charge(&mut self, bag: &ProtoBag<'r>) -> Result<(), DecodeError> {
        self.decoded_bytes = self.decoded_bytes.saturating_add(bag.decoded_bytes());
        self.limits
            .check(Limit::ReportDecodedBytes, self.decoded_bytes)
    }
}

impl<'r> Iterator for ReportSets<'r, '_> {
    type Item = Result<ProtoBag<'r>, SetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.stopped || self.next >= self.request.len() {
            return None;
        }
        let index = self.next;
        self.next += 1;
        let decoded = self.decode(index).and_then(|bag| {
            self.charge(&bag).inspect_err(|_| self.stopped = true)?;
            Ok(bag)
        });
        Some(decoded.map_err(|error| SetError { index, error }))
    }
}
