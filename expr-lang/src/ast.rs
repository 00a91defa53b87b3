//! The expression tree. Like Mixer's, it has three node kinds: constants, variables
//! (attribute references) and function calls; every operator is a call to an intrinsic
//! (`a == b` is `EQ(a, b)`), so operators and functions type-check through one table.

use std::fmt;

use crate::value::ValueType;

/// A literal's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    String(String),
    Int64(i64),
    Double(f64),
    Bool(bool),
    /// A string literal that parses as a Go duration, in nanoseconds.
    Duration(i64),
}

impl Literal {
    pub fn value_type(&self) -> ValueType {
        match self {
            Literal::String(_) => ValueType::String,
            Literal::Int64(_) => ValueType::Int64,
            Literal::Double(_) => ValueType::Double,
            Literal::Bool(_) => ValueType::Bool,
            Literal::Duration(_) => ValueType::Duration,
        }
    }
}

/// A constant: its value and its source text (which is how it prints).
#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    pub value: Literal,
    pub text: String,
}

/// A function or method call. Operators are calls to intrinsics (`EQ`, `LOR`, `OR`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub name: String,
    /// The receiver of a method call (`a.startsWith("x")` has target `$a`).
    pub target: Option<Box<Expr>>,
    pub args: Vec<Expr>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Const(Constant),
    /// An attribute, by its full dotted name.
    Var(String),
    Call(Call),
}

/// A node with the byte offset in the source where it starts (for error columns).
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub offset: usize,
}

impl Expr {
    pub fn constant(value: Literal, text: impl Into<String>, offset: usize) -> Expr {
        Expr {
            kind: ExprKind::Const(Constant {
                value,
                text: text.into(),
            }),
            offset,
        }
    }

    pub fn var(name: impl Into<String>, offset: usize) -> Expr {
        Expr {
            kind: ExprKind::Var(name.into()),
            offset,
        }
    }

    pub fn call(
        name: impl Into<String>,
        target: Option<Expr>,
        args: Vec<Expr>,
        offset: usize,
    ) -> Expr {
        Expr {
            kind: ExprKind::Call(Call {
                name: name.into(),
                target: target.map(Box::new),
                args,
            }),
            offset,
        }
    }
}

impl fmt::Display for Expr {
    /// Mixer's printed form: constants as written (booleans lower-cased), variables as
    /// `$name`, calls as `NAME(arg, arg)` and methods as `target:name(args)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Const(c) => match c.value {
                Literal::Bool(b) => write!(f, "{b}"),
                _ => f.write_str(&c.text),
            },
            ExprKind::Var(name) => write!(f, "${name}"),
            ExprKind::Call(call) => {
                if let Some(t) = &call.target {
                    write!(f, "{t}:")?;
                }
                write!(f, "{}(", call.name)?;
                for (i, a) in call.args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
        }
    }
}
