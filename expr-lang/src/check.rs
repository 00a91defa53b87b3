//! Type checking against an attribute manifest, with Mixer's rules: exact type equality,
//! no implicit conversions, the first generic operand fixes the type of the others.
//!
//! Checking also resolves every name: an attribute to its manifest id, a call to its
//! implementation. The compiler works from the resulting [`Typed`] tree alone.

use crate::ast::{Call, Expr, ExprKind, Literal};
use crate::error::{CompileError, CompileErrorKind};
use crate::functions::{FunctionImpl, FunctionMeta, FunctionTable};
use crate::manifest::Manifest;
use crate::value::ValueType;

/// A checked node: its type, where it starts in the source, and what it is.
#[derive(Clone, Debug)]
pub(crate) struct Typed {
    pub ty: ValueType,
    pub offset: usize,
    pub kind: TypedKind,
}

#[derive(Clone, Debug)]
pub(crate) enum TypedKind {
    Const(Literal),
    /// A declared attribute, with its manifest id.
    Attr {
        name: String,
        id: u32,
    },
    Call(TypedCall),
}

/// A call resolved to its implementation.
#[derive(Clone, Debug)]
pub(crate) struct TypedCall {
    pub name: String,
    pub function: FunctionImpl,
    /// The receiver of a method call.
    pub target: Option<Box<Typed>>,
    pub args: Vec<Typed>,
}

/// Checks `expr`; the root's `ty` is the expression's type.
pub(crate) fn check(
    expr: &Expr,
    manifest: &Manifest,
    functions: &FunctionTable,
    source: &str,
) -> Result<Typed, CompileError> {
    Checker {
        manifest,
        functions,
        source,
    }
    .check(expr)
}

struct Checker<'c> {
    manifest: &'c Manifest,
    functions: &'c FunctionTable,
    source: &'c str,
}

impl Checker<'_> {
    fn error(&self, message: String, offset: usize) -> CompileError {
        CompileError::new(CompileErrorKind::Type, message, self.source, Some(offset))
    }

    fn check(&self, expr: &Expr) -> Result<Typed, CompileError> {
        let (ty, kind) = match &expr.kind {
            ExprKind::Const(c) => (c.value.value_type(), TypedKind::Const(c.value.clone())),
            ExprKind::Var(name) => match self.manifest.get(name) {
                Some(info) => (
                    info.value_type,
                    TypedKind::Attr {
                        name: name.clone(),
                        id: info.id,
                    },
                ),
                None => return Err(self.error(format!("unknown attribute {name}"), expr.offset)),
            },
            ExprKind::Call(call) => {
                let (ty, call) = self.check_call(expr, call)?;
                (ty, TypedKind::Call(call))
            }
        };
        Ok(Typed {
            ty,
            offset: expr.offset,
            kind,
        })
    }

    fn check_call(&self, expr: &Expr, call: &Call) -> Result<(ValueType, TypedCall), CompileError> {
        let meta = self.resolve(expr, call)?;
        let mut template = ValueType::Unspecified;
        let target = match &call.target {
            Some(t) => Some(Box::new(self.check_target(expr, t, meta, &mut template)?)),
            None => None,
        };
        self.check_arity(expr, call, meta)?;
        let mut args = Vec::with_capacity(call.args.len());
        for (i, (arg, &declared)) in call.args.iter().zip(&meta.arg_types).enumerate() {
            args.push(self.check_arg(expr, i, arg, declared, &mut template)?);
        }
        let ty = if meta.return_type == ValueType::Unspecified {
            template
        } else {
            meta.return_type
        };
        let call = TypedCall {
            name: call.name.clone(),
            function: meta.implementation.clone(),
            target,
            args,
        };
        Ok((ty, call))
    }

    /// The signature the call's name resolves to, called the way it declares.
    fn resolve(&self, expr: &Expr, call: &Call) -> Result<&FunctionMeta, CompileError> {
        let Some(meta) = self.functions.get(&call.name) else {
            return Err(self.error(format!("unknown function: {}", call.name), expr.offset));
        };
        if call.target.is_some() && !meta.instance {
            return Err(self.error(
                format!(
                    "invoking regular function on instance method: {}",
                    call.name
                ),
                expr.offset,
            ));
        }
        if call.target.is_none() && meta.instance {
            return Err(self.error(
                format!(
                    "invoking instance method without an instance: {}",
                    call.name
                ),
                expr.offset,
            ));
        }
        Ok(meta)
    }

    fn check_target(
        &self,
        expr: &Expr,
        target: &Expr,
        meta: &FunctionMeta,
        template: &mut ValueType,
    ) -> Result<Typed, CompileError> {
        let typed = self.check(target)?;
        if meta.target_type == ValueType::Unspecified {
            *template = typed.ty;
        } else if typed.ty != meta.target_type {
            return Err(self.error(
                format!(
                    "{expr} target typeError got {}, expected {}",
                    typed.ty, meta.target_type
                ),
                target.offset,
            ));
        }
        Ok(typed)
    }

    /// Mixer accepted surplus arguments and then misbehaved at run time (see
    /// DIFFERENCES.md); an arity mismatch in either direction is rejected here.
    fn check_arity(
        &self,
        expr: &Expr,
        call: &Call,
        meta: &FunctionMeta,
    ) -> Result<(), CompileError> {
        if call.args.len() == meta.arg_types.len() {
            return Ok(());
        }
        Err(self.error(
            format!(
                "{expr} arity mismatch. Got {} arg(s), expected {} arg(s)",
                call.args.len(),
                meta.arg_types.len()
            ),
            expr.offset,
        ))
    }

    /// Argument `i`, against its declared type; the first generic position fixes the
    /// `template` for the later ones.
    fn check_arg(
        &self,
        expr: &Expr,
        i: usize,
        arg: &Expr,
        declared: ValueType,
        template: &mut ValueType,
    ) -> Result<Typed, CompileError> {
        let typed = self.check(arg)?;
        let expected = match declared {
            ValueType::Unspecified if *template == ValueType::Unspecified => {
                *template = typed.ty;
                return Ok(typed);
            }
            ValueType::Unspecified => *template,
            declared => declared,
        };
        if typed.ty != expected {
            return Err(self.error(
                format!(
                    "{expr} arg {} ({arg}) typeError got {}, expected {}",
                    i + 1,
                    typed.ty,
                    expected
                ),
                arg.offset,
            ));
        }
        Ok(typed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn check_src(src: &str, manifest: &Manifest) -> Result<ValueType, String> {
        let e = parse(src).map_err(|e| e.message)?;
        check(&e, manifest, &FunctionTable::standard(), src)
            .map(|t| t.ty)
            .map_err(|e| e.message)
    }

    #[test]
    fn mixer_type_rules() {
        let m = Manifest::from_pairs([
            ("a", ValueType::Int64),
            ("abc", ValueType::String),
            ("t1", ValueType::Timestamp),
            ("rd", ValueType::Duration),
            ("ar", ValueType::StringMap),
        ]);
        assert_eq!(check_src("a == 2", &m), Ok(ValueType::Bool));
        assert_eq!(check_src("rd | \"0ms\"", &m), Ok(ValueType::Duration));
        assert_eq!(
            check_src("1 == 1.0", &m),
            Err("EQ(1, 1.0) arg 2 (1.0) typeError got DOUBLE, expected INT64".into())
        );
        assert_eq!(
            check_src("42 <= t1", &m),
            Err("LEQ(42, $t1) arg 2 ($t1) typeError got TIMESTAMP, expected INT64".into())
        );
        assert_eq!(
            check_src("abc == \"0\"", &m),
            Err("EQ($abc, \"0\") arg 2 (\"0\") typeError got DURATION, expected STRING".into())
        );
        assert_eq!(
            check_src("size()", &m),
            Err("size() arity mismatch. Got 0 arg(s), expected 1 arg(s)".into())
        );
        assert_eq!(
            check_src("abc.toLower()", &m),
            Err("invoking regular function on instance method: toLower".into())
        );
        assert_eq!(check_src("nope", &m), Err("unknown attribute nope".into()));
        assert_eq!(check_src("!a", &m), Err("unknown function: NOT".into()));
        assert_eq!(check_src("ar[\"x\"]", &m), Ok(ValueType::String));
        assert_eq!(
            check_src("\"aaa\".matches(23)", &m),
            Err("\"aaa\":matches(23) arg 1 (23) typeError got INT64, expected STRING".into())
        );
    }
}
