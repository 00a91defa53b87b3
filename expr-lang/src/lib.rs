//! Mixer's attribute expression language (CEXL).
//!
//! The pipeline is [`parse()`] (pest grammar → [`ast::Expr`]) → `check` (types against an
//! attribute [`Manifest`], resolving attributes and functions) → `compile` (a tree of
//! typed nodes in a [`Program`]) → [`Program::evaluate`] against a [`Bag`] (`eval`), many
//! times, optionally recording the attributes it read.
//!
//! With the `cases` feature, `cases` runs and judges the conformance case files of
//! `tests/data/` (used by the crate's tests and by `mixer expr test`).
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
#[cfg(feature = "cases")]
pub mod cases;
mod check;
mod compile;
pub mod error;
mod eval;
pub mod functions;
pub mod golib;
pub mod manifest;
mod node;
pub mod parse;
pub mod pattern;
pub mod plan;
mod program;
pub mod referenced;
pub mod value;

pub use ast::Expr;
pub use bag::{AttrKey, Bag, MapBag, SlotBag, StringMap};
pub use error::{CompileError, CompileErrorKind, EvalError};
pub use functions::{FunctionMeta, FunctionTable};
pub use manifest::Manifest;
pub use parse::{extract_eq_matches, parse};
pub use plan::{BagEval, Direct, EvalPlan, EvalTable, Evaluator, ExprId, PlanBuilder};
pub use program::Program;
pub use referenced::{NoRecording, Recorder, ReferencedSet};
pub use value::{StringMapRef, Value, ValueType};
