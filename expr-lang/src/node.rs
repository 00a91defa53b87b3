//! A compiled program's tree: the compiler's output (compile.rs) and the evaluator's input
//! (eval.rs). Every operator and function is its own variant, specialised for its operand
//! type, so evaluation only matches on these enums.

use regex::Regex;

use crate::bag::AttrKey;
use crate::functions::{CmpOp, Conversion, CustomFn, StringTest};
use crate::value::{Value, ValueType};

/// An attribute reference resolved at compile time.
pub(crate) struct AttrSlot {
    pub name: Box<str>,
    pub id: u32,
    pub ty: ValueType,
}

impl AttrSlot {
    #[inline]
    pub fn key(&self) -> AttrKey<'_> {
        AttrKey {
            name: &self.name,
            id: self.id,
        }
    }
}

/// What `==` compares, by operand type.
#[derive(Clone, Copy, Debug)]
pub(crate) enum EqKind {
    Str,
    Int,
    Double,
    Bool,
    Ip,
    Timestamp,
    Dns,
    Email,
    Uri,
}

/// What `<`, `<=`, `>`, `>=` compare, by operand type.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CmpKind {
    Int,
    Double,
    Str,
    Timestamp,
}

/// What `+` adds, by operand type; strings keep their flavour.
#[derive(Clone, Copy, Debug)]
pub(crate) enum AddKind {
    Int,
    Double,
    Str(ValueType),
}

/// `match(x, "<constant>")`, decided once at compile time.
pub(crate) enum GlobPattern {
    Prefix(Box<str>),
    Suffix(Box<str>),
    Exact(Box<str>),
}

impl GlobPattern {
    pub fn new(pattern: &str) -> GlobPattern {
        if let Some(p) = pattern.strip_suffix('*') {
            GlobPattern::Prefix(p.into())
        } else if let Some(p) = pattern.strip_prefix('*') {
            GlobPattern::Suffix(p.into())
        } else {
            GlobPattern::Exact(pattern.into())
        }
    }

    pub fn matches(&self, s: &str) -> bool {
        match self {
            GlobPattern::Prefix(p) => s.starts_with(&**p),
            GlobPattern::Suffix(p) => s.ends_with(&**p),
            GlobPattern::Exact(p) => s == &**p,
        }
    }
}

pub(crate) enum Node {
    Const(Value<'static>),
    Attr(AttrSlot),
    Index(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Land(Box<Node>, Box<Node>),
    Lor(Box<Node>, Box<Node>),
    Eq {
        lhs: Box<Node>,
        rhs: Box<Node>,
        kind: EqKind,
        negate: bool,
    },
    Cmp {
        lhs: Box<Node>,
        rhs: Box<Node>,
        op: CmpOp,
        kind: CmpKind,
    },
    Add(Box<Node>, Box<Node>, AddKind),
    Conditional(Box<Node>, Box<Node>, Box<Node>),
    Size(Box<Node>),
    /// `match(subject, "constant pattern")`.
    Glob(Box<Node>, GlobPattern),
    /// `"constant regex".matches(subject)`, the regex compiled once, with the expression
    /// (a constant regex that does not compile is a compile error; see DIFFERENCES.md).
    MatchesConst(Regex, Box<Node>),
    /// A string test on two evaluated strings: the target (or first argument), then the
    /// other.
    Test(StringTest, Box<Node>, Box<Node>),
    Convert(Conversion, Box<Node>),
    /// Unlike `conditional`, Mixer evaluated both branches of `conditionalString`.
    ConditionalString(Box<Node>, Box<Node>, Box<Node>),
    EmptyStringMap,
    /// A host function: its target and arguments are evaluated strictly, left to right,
    /// before the call.
    Custom(CustomFn, Box<[Node]>),
    /// A function registered without an implementation: evaluating it is an error.
    Unimplemented(Box<str>),
}

impl Node {
    /// `(slot, key)` when this node is a map attribute and `key` a constant string.
    #[inline]
    pub fn attr_and_const_key<'a>(&'a self, key: &'a Node) -> Option<(&'a AttrSlot, &'a str)> {
        match (self, key) {
            (Node::Attr(slot), Node::Const(Value::String(k))) => Some((slot, k)),
            _ => None,
        }
    }

    /// The direct operands of a node.
    pub fn operands(&self) -> Vec<&Node> {
        match self {
            Node::Const(_) | Node::Attr(_) | Node::EmptyStringMap | Node::Unimplemented(_) => {
                vec![]
            }
            Node::Index(a, b)
            | Node::Or(a, b)
            | Node::Land(a, b)
            | Node::Lor(a, b)
            | Node::Add(a, b, _)
            | Node::Eq { lhs: a, rhs: b, .. }
            | Node::Cmp { lhs: a, rhs: b, .. }
            | Node::Test(_, a, b) => vec![a, b],
            Node::Conditional(a, b, c) | Node::ConditionalString(a, b, c) => vec![a, b, c],
            Node::Size(a) | Node::Glob(a, _) | Node::MatchesConst(_, a) | Node::Convert(_, a) => {
                vec![a]
            }
            Node::Custom(_, ops) => ops.iter().collect(),
        }
    }
}
