//! Mixer's attribute expression language (CEXL).
//!
//! The pipeline is `parse` (pest grammar → [`ast::Expr`]) → `check` (types against an
//! attribute [`Manifest`]) → `compile` (a [`Program`]) → [`Program::evaluate`] against a
//! [`Bag`], many times, optionally recording the attributes it read.
//!
//! ```
//! use expr_lang::{Manifest, MapBag, Program, Value, ValueType};
//! let manifest = Manifest::from_pairs([("response.duration", ValueType::Duration)]);
//! let program = Program::compile(r#"response.duration | "0ms""#, &manifest).unwrap();
//! assert_eq!(program.result_type(), ValueType::Duration);
//! let bag = MapBag::new();
//! let value = program.evaluate(&bag).unwrap();
//! assert_eq!(value, Value::Duration(0));
//! ```

pub mod ast;
pub mod bag;
pub mod cases;
pub mod check;
pub mod compile;
pub mod error;
pub mod functions;
pub mod golib;
pub mod manifest;
pub mod parse;
pub mod pattern;
pub mod referenced;
pub mod value;

pub use ast::Expr;
pub use bag::{AttrKey, Bag, MapBag, SlotBag, StringMap};
pub use check::check;
pub use compile::Program;
pub use error::{CompileError, CompileErrorKind, EvalError};
pub use functions::{FunctionMeta, FunctionTable};
pub use manifest::Manifest;
pub use parse::{extract_eq_matches, parse};
pub use referenced::{NoRecording, Recorder, ReferencedSet};
pub use value::{StringMapRef, Value, ValueType};
