//! Compressed attributes, the global dictionary, and the protobuf-backed attribute bag.
//!
//! * [`GLOBAL_WORDS`] / [`global_word_index`]: the 222-word global dictionary.
//! * [`AttrTable`]: per config snapshot, maps dictionary words and names to manifest ids.
//! * [`ProtoBag`]: one request's attributes decoded from `CompressedAttributes`,
//!   strictly: unresolvable indexes and repeated names are [`DecodeError`]s.
//! * [`encode_referenced`] / [`decode_referenced`]: `ReferencedAttributes`.
//! * [`AttributeEncoder`] / [`encode_report`]: the Envoy client's encoding, for clients
//!   and tests.
//!
//! ```
//! use expr_lang::{AttrKey, Bag, Manifest, Value, ValueType};
//! use mixer::attrs::{AttrTable, AttributeEncoder, ProtoBag};
//!
//! // Once per config snapshot.
//! let manifest = Manifest::from_pairs([("request.path", ValueType::String)]);
//! let table = AttrTable::new(&manifest);
//!
//! // A Check request's attributes, as Envoy would send them.
//! let attrs = vec![
//!     ("request.path".to_owned(), Value::str("/v1/items")),
//!     ("my.custom".to_owned(), Value::Int64(7)),
//! ];
//! let compressed = AttributeEncoder::encode_one(222, &attrs);
//!
//! // Per request: Report elements with empty `words` pass `ReportRequest.default_words`.
//! let bag = ProtoBag::decode(&compressed, &compressed.words, &table).unwrap();
//! let id = manifest.get("request.path").unwrap().id;
//! assert_eq!(
//!     bag.get(AttrKey { name: "request.path", id }),
//!     Some(Value::str("/v1/items"))
//! );
//! assert_eq!(bag.get_by_name("my.custom"), Some(Value::Int64(7)));
//! ```

mod bag;
mod dictionary;
mod encode;
mod error;
mod limits;
mod referenced;
mod report;
mod table;

#[cfg(test)]
mod tests;

pub use bag::{ProtoBag, ProtoStringMap};
pub use dictionary::{GLOBAL_WORD_COUNT, GLOBAL_WORDS, global_word_index, global_words};
pub use encode::{AttributeEncoder, encode_report};
pub use error::{DecodeError, DecodeErrorKind, IndexSite, Limit, MapKind, Unresolved};
pub use limits::DecodeLimits;
pub use referenced::{decode_referenced, encode_referenced};
pub use report::{ReportSets, SetError};
pub use table::AttrTable;
