//! [`DecodeLimits`]: how much one request may ask the decoder to build.

use super::error::{DecodeError, DecodeErrorKind, Limit};

/// Bounds on what one request may make the server decode, so that a small hostile message
/// cannot cost more than its own answer. Over a limit is RESOURCE_EXHAUSTED, naming the flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Attributes in one set (`--max-attributes-per-set`). Envoy sends 30 to 80.
    pub max_attributes_per_set: usize,
    /// Entries in one STRING_MAP value (`--max-string-map-entries`). Envoy caps a request
    /// at 100 headers by default.
    pub max_string_map_entries: usize,
    /// Attribute sets in one Report (`--max-report-attribute-sets`). Envoy's Mixer client
    /// batched at most a few hundred.
    pub max_report_sets: usize,
    /// Decoded attribute bytes of one Report, summed over its sets
    /// (`--max-report-decoded-bytes`): what bounds the work of DELTA_ENCODING batches, whose
    /// every set carries all attributes inherited from the sets before it.
    pub max_report_decoded_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> DecodeLimits {
        DecodeLimits {
            max_attributes_per_set: 512,
            max_string_map_entries: 1024,
            max_report_sets: 1000,
            max_report_decoded_bytes: 64 * 1024 * 1024,
        }
    }
}

impl DecodeLimits {
    /// The maximum for `limit`.
    pub fn max(&self, limit: Limit) -> usize {
        match limit {
            Limit::AttributesPerSet => self.max_attributes_per_set,
            Limit::StringMapEntries => self.max_string_map_entries,
            Limit::ReportSets => self.max_report_sets,
            Limit::ReportDecodedBytes => self.max_report_decoded_bytes,
        }
    }

    /// An error when `found` is over the maximum for `limit`.
    #[inline]
    pub fn check(&self, limit: Limit, found: usize) -> Result<(), DecodeError> {
        let max = self.max(limit);
        if found > max {
            return Err(DecodeError::new(DecodeErrorKind::OverLimit { limit, max }));
        }
        Ok(())
    }
}
