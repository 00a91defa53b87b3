//! [`Program`]: an expression parsed, checked and compiled once, then evaluated many times.

use std::fmt;

use crate::ast::Expr;
use crate::bag::Bag;
use crate::check::check;
use crate::compile::compile;
use crate::error::{CompileError, EvalError};
use crate::functions::FunctionTable;
use crate::manifest::Manifest;
use crate::node::Node;
use crate::parse::parse;
use crate::referenced::{NoRecording, Recorder};
use crate::value::{Value, ValueType};

/// A compiled expression. Immutable and `Send + Sync`: compile once per config snapshot,
/// evaluate from any number of request threads.
pub struct Program {
    source: String,
    result_type: ValueType,
    root: Node,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("source", &self.source)
            .field("result_type", &self.result_type)
            .finish()
    }
}

impl Program {
    /// Parses, checks and compiles `source` against `manifest` with the standard functions.
    pub fn compile(source: &str, manifest: &Manifest) -> Result<Program, CompileError> {
        Program::compile_with(source, manifest, &FunctionTable::standard())
    }

    /// As [`Program::compile`], with a caller-supplied function table.
    pub fn compile_with(
        source: &str,
        manifest: &Manifest,
        functions: &FunctionTable,
    ) -> Result<Program, CompileError> {
        let expr = parse(source)?;
        Program::from_expr(&expr, source, manifest, functions)
    }

    /// Compiles an already-parsed expression: type checking (which resolves attributes and
    /// functions), then code generation.
    pub fn from_expr(
        expr: &Expr,
        source: &str,
        manifest: &Manifest,
        functions: &FunctionTable,
    ) -> Result<Program, CompileError> {
        let typed = check(expr, manifest, functions, source)?;
        let root = compile(&typed, source)?;
        Ok(Program {
            source: source.to_owned(),
            result_type: typed.ty,
            root,
        })
    }

    /// The expression's checked type.
    pub fn result_type(&self) -> ValueType {
        self.result_type
    }

    /// The source text this program was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against `bag`.
    #[inline]
    pub fn evaluate<'a, B: Bag + ?Sized>(&'a self, bag: &'a B) -> Result<Value<'a>, EvalError> {
        self.root.evaluate(bag, NoRecording)
    }

    /// Evaluates against `bag`, reporting every attribute lookup to `recorder`.
    pub fn evaluate_recorded<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        bag: &'a B,
        recorder: &mut R,
    ) -> Result<Value<'a>, EvalError> {
        self.root.evaluate(bag, recorder)
    }

    /// As [`Program::evaluate_recorded`], the error boxed.
    pub(crate) fn evaluate_boxed<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        bag: &'a B,
        recorder: R,
    ) -> Result<Value<'a>, Box<EvalError>> {
        self.root.evaluate_boxed(bag, recorder)
    }

    /// Evaluates a BOOL program (a rule's `match`).
    #[inline]
    pub fn evaluate_bool<B: Bag + ?Sized>(&self, bag: &B) -> Result<bool, EvalError> {
        self.root.evaluate_bool(bag, NoRecording)
    }

    /// As [`Program::evaluate_bool`], recording lookups.
    pub fn evaluate_bool_recorded<B: Bag + ?Sized, R: Recorder>(
        &self,
        bag: &B,
        recorder: &mut R,
    ) -> Result<bool, EvalError> {
        self.root.evaluate_bool(bag, recorder)
    }
}
