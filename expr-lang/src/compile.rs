//! Checked tree → [`Node`] tree: code generation. Every decision that depends only on the
//! expression is made here, once: which node an operator becomes for its operand type,
//! constant glob and regex patterns, and constant subtrees, which are folded.

use std::borrow::Cow;

use crate::ast::Literal;
use crate::bag::MapBag;
use crate::check::{Typed, TypedCall, TypedKind};
use crate::error::{CompileError, CompileErrorKind};
use crate::functions::{CmpOp, Extern, FunctionImpl, Intrinsic, StringTest};
use crate::node::{AddKind, AttrSlot, CmpKind, EqKind, GlobPattern, Node};
use crate::pattern;
use crate::referenced::NoRecording;
use crate::value::{Value, ValueType};

/// Generates the program tree for a checked expression.
pub(crate) fn compile(typed: &Typed, source: &str) -> Result<Node, CompileError> {
    Compiler { source }.node(typed)
}

struct Compiler<'c> {
    source: &'c str,
}

/// How Mixer's code generator named a type in "not yet implemented" errors.
fn il_type_name(ty: ValueType) -> &'static str {
    match ty {
        ValueType::String | ValueType::DnsName | ValueType::EmailAddress | ValueType::Uri => {
            "string"
        }
        ValueType::Int64 => "integer",
        ValueType::Double => "double",
        ValueType::Bool => "bool",
        ValueType::Duration => "duration",
        _ => "interface",
    }
}

impl Compiler<'_> {
    fn codegen_error(&self, message: String, offset: usize) -> CompileError {
        CompileError::new(
            CompileErrorKind::Codegen,
            message,
            self.source,
            Some(offset),
        )
    }

    fn not_implemented(&self, what: &str, ty: ValueType, offset: usize) -> CompileError {
        self.codegen_error(
            format!(
                "internal compiler error -- {what} for type not yet implemented: {}",
                il_type_name(ty)
            ),
            offset,
        )
    }

    /// A node, folded: parents see constant children as constants.
    fn node(&self, typed: &Typed) -> Result<Node, CompileError> {
        let node = match &typed.kind {
            TypedKind::Const(lit) => Node::Const(literal_value(lit)),
            TypedKind::Attr { name, id } => Node::Attr(AttrSlot {
                name: name.as_str().into(),
                id: *id,
                ty: typed.ty,
            }),
            TypedKind::Call(call) => self.call(call, typed.offset)?,
        };
        Ok(fold(node))
    }

    fn call(&self, call: &TypedCall, offset: usize) -> Result<Node, CompileError> {
        // Children first: code generation errors surface in post-order, as Mixer's did.
        let mut operands = Vec::with_capacity(call.args.len() + 1);
        if let Some(target) = &call.target {
            operands.push(self.node(target)?);
        }
        for arg in &call.args {
            operands.push(self.node(arg)?);
        }
        let first_arg_ty = call.args.first().map_or(ValueType::Unspecified, |t| t.ty);
        match &call.function {
            FunctionImpl::Intrinsic(op) => self.intrinsic(*op, first_arg_ty, operands, offset),
            FunctionImpl::Extern(ext) => {
                let target_offset = call.target.as_ref().map_or(offset, |t| t.offset);
                self.standard_extern(*ext, operands, offset, target_offset)
            }
            FunctionImpl::Custom(f) => Ok(Node::Custom(f.clone(), operands.into_boxed_slice())),
            FunctionImpl::SignatureOnly => Ok(Node::Unimplemented(call.name.as_str().into())),
        }
    }

    /// The operands of a builtin that takes `N`. A host can re-register an intrinsic's
    /// name with another signature (functions.rs), so the count is checked, not assumed.
    fn fixed<const N: usize>(
        &self,
        name: &str,
        operands: Vec<Node>,
        offset: usize,
    ) -> Result<[Box<Node>; N], CompileError> {
        let got = operands.len();
        let operands: [Node; N] = operands.try_into().map_err(|_| {
            self.codegen_error(
                format!("internal compiler error -- {name} takes {N} operand(s), got {got}"),
                offset,
            )
        })?;
        Ok(operands.map(Box::new))
    }

    fn intrinsic(
        &self,
        op: Intrinsic,
        arg_ty: ValueType,
        operands: Vec<Node>,
        offset: usize,
    ) -> Result<Node, CompileError> {
        let name = op.name();
        Ok(match op {
            Intrinsic::Lor => {
                let [a, b] = self.fixed(name, operands, offset)?;
                Node::Lor(a, b)
            }
            Intrinsic::Land => {
                let [a, b] = self.fixed(name, operands, offset)?;
                Node::Land(a, b)
            }
            Intrinsic::Or => {
                let [a, b] = self.fixed(name, operands, offset)?;
                Node::Or(a, b)
            }
            Intrinsic::Index => {
                let [map, key] = self.fixed(name, operands, offset)?;
                Node::Index(map, key)
            }
            Intrinsic::Conditional => {
                let [c, a, b] = self.fixed(name, operands, offset)?;
                Node::Conditional(c, a, b)
            }
            Intrinsic::Size => {
                let [s] = self.fixed(name, operands, offset)?;
                Node::Size(s)
            }
            Intrinsic::Eq | Intrinsic::Neq => {
                let kind = self.eq_kind(arg_ty, offset)?;
                let [lhs, rhs] = self.fixed(name, operands, offset)?;
                Node::Eq {
                    lhs,
                    rhs,
                    kind,
                    negate: op == Intrinsic::Neq,
                }
            }
            Intrinsic::Order(cmp) => {
                let kind = self.cmp_kind(cmp, arg_ty, offset)?;
                let [lhs, rhs] = self.fixed(name, operands, offset)?;
                Node::Cmp {
                    lhs,
                    rhs,
                    op: cmp,
                    kind,
                }
            }
            Intrinsic::Add => {
                let kind = self.add_kind(arg_ty, offset)?;
                let [a, b] = self.fixed(name, operands, offset)?;
                Node::Add(a, b, kind)
            }
        })
    }

    fn eq_kind(&self, ty: ValueType, offset: usize) -> Result<EqKind, CompileError> {
        Ok(match ty {
            ValueType::String => EqKind::Str,
            ValueType::Int64 => EqKind::Int,
            ValueType::Double => EqKind::Double,
            ValueType::Bool => EqKind::Bool,
            ValueType::IpAddress => EqKind::Ip,
            ValueType::Timestamp => EqKind::Timestamp,
            ValueType::DnsName => EqKind::Dns,
            ValueType::EmailAddress => EqKind::Email,
            ValueType::Uri => EqKind::Uri,
            other => return Err(self.not_implemented("equality", other, offset)),
        })
    }

    fn cmp_kind(&self, op: CmpOp, ty: ValueType, offset: usize) -> Result<CmpKind, CompileError> {
        Ok(match ty {
            ValueType::Int64 => CmpKind::Int,
            ValueType::Double => CmpKind::Double,
            t if t.is_string_like() => CmpKind::Str,
            ValueType::Timestamp => CmpKind::Timestamp,
            other => return Err(self.not_implemented(op.description(), other, offset)),
        })
    }

    fn add_kind(&self, ty: ValueType, offset: usize) -> Result<AddKind, CompileError> {
        Ok(match ty {
            ValueType::Int64 => AddKind::Int,
            ValueType::Double => AddKind::Double,
            t if t.is_string_like() => AddKind::Str(t),
            other => return Err(self.not_implemented("Add", other, offset)),
        })
    }

    /// A standard extern. `target_offset` is where its target (or the call) starts.
    fn standard_extern(
        &self,
        ext: Extern,
        operands: Vec<Node>,
        offset: usize,
        target_offset: usize,
    ) -> Result<Node, CompileError> {
        let name = ext.name();
        Ok(match ext {
            Extern::Test(test) => {
                let [a, b] = self.fixed(name, operands, offset)?;
                self.string_test(test, a, b, target_offset)?
            }
            Extern::Convert(conversion) => {
                let [s] = self.fixed(name, operands, offset)?;
                Node::Convert(conversion, s)
            }
            Extern::ConditionalString => {
                let [c, a, b] = self.fixed(name, operands, offset)?;
                Node::ConditionalString(c, a, b)
            }
            Extern::EmptyStringMap => {
                let [] = self.fixed(name, operands, offset)?;
                Node::EmptyStringMap
            }
        })
    }

    /// Constant patterns are decided once, here.
    fn string_test(
        &self,
        test: StringTest,
        a: Box<Node>,
        b: Box<Node>,
        target_offset: usize,
    ) -> Result<Node, CompileError> {
        Ok(match (test, &*a, &*b) {
            (StringTest::Match, _, Node::Const(Value::String(p))) => {
                Node::Glob(a, GlobPattern::new(p))
            }
            (StringTest::Matches, Node::Const(Value::String(re)), _) => {
                // A rule whose pattern can never compile would never apply: refuse it now,
                // pointing at the pattern, rather than fail open on every request.
                let compiled = pattern::compile_constant(re).map_err(|message| {
                    CompileError::new(
                        CompileErrorKind::Regex,
                        message,
                        self.source,
                        Some(target_offset),
                    )
                })?;
                Node::MatchesConst(compiled, b)
            }
            _ => Node::Test(test, a, b),
        })
    }
}

fn literal_value(lit: &Literal) -> Value<'static> {
    match lit {
        Literal::String(s) => Value::String(Cow::Owned(s.clone())),
        Literal::Int64(v) => Value::Int64(*v),
        Literal::Double(v) => Value::Double(*v),
        Literal::Bool(v) => Value::Bool(*v),
        Literal::Duration(v) => Value::Duration(*v),
    }
}

/// Constant folding: a node whose operands are all constants is evaluated once, here.
/// Folding never hides an error: a constant subtree that fails keeps failing at run time,
/// and only short-circuits that evaluation itself would take are applied.
fn fold(node: Node) -> Node {
    match node {
        Node::Const(_) | Node::Attr(_) => node,
        // Host functions may not be pure; an unimplemented one must fail at run time.
        Node::Custom(..) | Node::Unimplemented(_) => node,
        Node::Conditional(c, a, b) if matches!(*c, Node::Const(Value::Bool(_))) => {
            if matches!(*c, Node::Const(Value::Bool(true))) {
                *a
            } else {
                *b
            }
        }
        Node::Or(l, _) if matches!(*l, Node::Const(_)) => *l,
        Node::Land(l, _) if matches!(*l, Node::Const(Value::Bool(false))) => *l,
        Node::Lor(l, _) if matches!(*l, Node::Const(Value::Bool(true))) => *l,
        node if node.operands().iter().all(|n| matches!(n, Node::Const(_))) => {
            let folded = node
                .evaluate(&MapBag::new(), NoRecording)
                .map(Value::into_owned);
            match folded {
                Ok(v) => Node::Const(v),
                Err(_) => node,
            }
        }
        node => node,
    }
}

#[cfg(test)]
mod tests {
    use crate::error::CompileErrorKind;
    use crate::manifest::Manifest;
    use crate::program::Program;
    use crate::value::ValueType;

    fn manifest() -> Manifest {
        Manifest::from_pairs([
            ("abc", ValueType::String),
            ("ar", ValueType::StringMap),
            ("rd", ValueType::Duration),
        ])
    }

    #[test]
    fn codegen_errors() {
        let m = manifest();
        let e = Program::compile("rd == rd", &m).unwrap_err();
        assert_eq!(
            e.message,
            "internal compiler error -- equality for type not yet implemented: duration"
        );
        let e = Program::compile("ar == ar", &m).unwrap_err();
        assert!(e.message.ends_with("interface"));
        let e = Program::compile("true + false", &m).unwrap_err();
        assert!(e.message.contains("Add for type not yet implemented: bool"));
        let e = Program::compile("rd < rd", &m).unwrap_err();
        assert!(
            e.message
                .contains("less than for type not yet implemented: duration")
        );
    }

    #[test]
    fn constant_regex_that_cannot_compile_is_a_compile_error_at_the_pattern() {
        let m = Manifest::from_pairs([("abc", ValueType::String), ("ai", ValueType::Int64)]);
        let e = Program::compile(r#"ai == 1 && "^\\w{1000}$".matches(abc)"#, &m).unwrap_err();
        assert_eq!(e.kind, CompileErrorKind::Regex);
        assert_eq!(e.column(), Some(12));
        assert!(
            e.message
                .starts_with("error parsing regexp: expression too large")
        );
        let e = Program::compile(r#""a[".matches(abc)"#, &m).unwrap_err();
        assert_eq!((e.kind, e.column()), (CompileErrorKind::Regex, Some(1)));
        // Folded to a constant first, so checked as one.
        let e = Program::compile(r#"("a" + "[").matches(abc)"#, &m).unwrap_err();
        assert_eq!(e.kind, CompileErrorKind::Regex);
    }

    #[test]
    fn a_reregistered_intrinsic_with_another_arity_is_a_compile_error() {
        let mut functions = crate::functions::FunctionTable::standard();
        functions.register(
            "size",
            false,
            ValueType::Unspecified,
            vec![],
            ValueType::Int64,
            None,
        );
        let e = Program::compile_with("size()", &manifest(), &functions).unwrap_err();
        assert_eq!(e.kind, CompileErrorKind::Codegen);
        assert_eq!(
            e.message,
            "internal compiler error -- size takes 1 operand(s), got 0"
        );
    }
}
