//! Checked tree → [`Program`]: a tree of typed nodes whose operator and type decisions were
//! all made at compile time, evaluated many times against a [`Bag`].
//!
//! Evaluation has two modes per node, following Mixer's `|` semantics:
//! `eval` is strict (an absent attribute is `lookup failed`), and `resolve` answers
//! "does this operand resolve?" for the left side of `|`, where absent attributes, absent
//! maps and missing map keys fall through to the right side instead of failing.

use std::borrow::Cow;
use std::fmt;

use regex::Regex;

use crate::ast::{Expr, ExprKind, Literal};
use crate::bag::{AttrKey, Bag};
use crate::check::{Typed, check};
use crate::error::{CompileError, CompileErrorKind, EvalError};
use crate::functions::{CustomFn, FunctionImpl, FunctionTable};
use crate::golib;
use crate::golib::time::Timestamp;
use crate::manifest::Manifest;
use crate::parse::parse;
use crate::pattern;
use crate::referenced::{NoRecording, Recorder};
use crate::value::{EMPTY_MAP, StringMapRef, Value, ValueType};

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

    /// Compiles an already-parsed expression.
    pub fn from_expr(
        expr: &Expr,
        source: &str,
        manifest: &Manifest,
        functions: &FunctionTable,
    ) -> Result<Program, CompileError> {
        let typed = check(expr, manifest, functions, source)?;
        let root = Compiler {
            manifest,
            functions,
            source,
        }
        .node(expr, &typed)?;
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
        self.root
            .eval(&mut Cx {
                bag,
                rec: NoRecording,
            })
            .map_err(|e| *e)
    }

    /// Evaluates against `bag`, reporting every attribute lookup to `recorder`.
    pub fn evaluate_recorded<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        bag: &'a B,
        recorder: &mut R,
    ) -> Result<Value<'a>, EvalError> {
        self.root
            .eval(&mut Cx { bag, rec: recorder })
            .map_err(|e| *e)
    }

    /// Evaluates a BOOL program (a rule's `match`).
    #[inline]
    pub fn evaluate_bool<B: Bag + ?Sized>(&self, bag: &B) -> Result<bool, EvalError> {
        self.root
            .eval_bool(&mut Cx {
                bag,
                rec: NoRecording,
            })
            .map_err(|e| *e)
    }

    /// As [`Program::evaluate_bool`], recording lookups.
    pub fn evaluate_bool_recorded<B: Bag + ?Sized, R: Recorder>(
        &self,
        bag: &B,
        recorder: &mut R,
    ) -> Result<bool, EvalError> {
        self.root
            .eval_bool(&mut Cx { bag, rec: recorder })
            .map_err(|e| *e)
    }
}

fn type_mismatch(kind: &'static str, v: &Value<'_>) -> Fault {
    Box::new(EvalError::Conversion {
        kind,
        value: v.to_string(),
    })
}

/// Evaluation errors travel boxed inside the evaluator so that `Result`s stay two words
/// wide and are returned in registers; the public API unboxes them.
type Fault = Box<EvalError>;

struct Cx<'a, B: ?Sized, R> {
    bag: &'a B,
    rec: R,
}

/// An attribute reference resolved at compile time.
struct AttrSlot {
    name: Box<str>,
    id: u32,
    ty: ValueType,
}

impl AttrSlot {
    #[inline]
    fn key(&self) -> AttrKey<'_> {
        AttrKey {
            name: &self.name,
            id: self.id,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum EqKind {
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

#[derive(Clone, Copy, Debug)]
enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug)]
enum CmpKind {
    Int,
    Double,
    Str,
    Timestamp,
}

#[derive(Clone, Copy, Debug)]
enum AddKind {
    Int,
    Double,
    Str(ValueType),
}

/// `match(x, "<constant>")`, decided once at compile time.
enum GlobPattern {
    Prefix(Box<str>),
    Suffix(Box<str>),
    Exact(Box<str>),
}

impl GlobPattern {
    fn new(pattern: &str) -> GlobPattern {
        if let Some(p) = pattern.strip_suffix('*') {
            GlobPattern::Prefix(p.into())
        } else if let Some(p) = pattern.strip_prefix('*') {
            GlobPattern::Suffix(p.into())
        } else {
            GlobPattern::Exact(pattern.into())
        }
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            GlobPattern::Prefix(p) => s.starts_with(&**p),
            GlobPattern::Suffix(p) => s.ends_with(&**p),
            GlobPattern::Exact(p) => s == &**p,
        }
    }
}

#[derive(Clone)]
enum Extern {
    Match,
    Matches,
    StartsWith,
    EndsWith,
    EmptyStringMap,
    ConditionalString,
    Ip,
    Timestamp,
    DnsName,
    Email,
    Uri,
    ToLower,
    Custom(CustomFn),
    Unimplemented(Box<str>),
}

enum Node {
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
    /// Everything else: a function whose target (first) and arguments are evaluated
    /// strictly, left to right, before the call.
    Call(Extern, Box<[Node]>),
}

struct Compiler<'c> {
    manifest: &'c Manifest,
    functions: &'c FunctionTable,
    source: &'c str,
}

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
    fn not_implemented(&self, what: &str, ty: ValueType, offset: usize) -> CompileError {
        CompileError::new(
            CompileErrorKind::Codegen,
            format!(
                "internal compiler error -- {what} for type not yet implemented: {}",
                il_type_name(ty)
            ),
            self.source,
            Some(offset),
        )
    }

    fn node(&self, expr: &Expr, typed: &Typed) -> Result<Node, CompileError> {
        self.build(expr, typed).map(fold)
    }

    fn build(&self, expr: &Expr, typed: &Typed) -> Result<Node, CompileError> {
        let call = match &expr.kind {
            ExprKind::Const(c) => return Ok(Node::Const(literal_value(&c.value))),
            ExprKind::Var(name) => {
                let info = self.manifest.get(name).expect("checked attribute");
                return Ok(Node::Attr(AttrSlot {
                    name: name.as_str().into(),
                    id: info.id,
                    ty: info.value_type,
                }));
            }
            ExprKind::Call(call) => call,
        };
        let meta = self.functions.get(&call.name).expect("checked function");
        // Children first: code generation errors surface in post-order, as Mixer's did.
        let target = match (&call.target, &typed.target) {
            (Some(t), Some(tt)) => Some(self.node(t, tt)?),
            _ => None,
        };
        let mut args = Vec::with_capacity(call.args.len());
        for (a, ta) in call.args.iter().zip(&typed.args) {
            args.push(self.node(a, ta)?);
        }
        let arg_ty = typed.args.first().map_or(ValueType::Unspecified, |t| t.ty);
        let offset = expr.offset;

        if let FunctionImpl::Intrinsic = meta.implementation {
            let mut it = args.into_iter();
            let mut next = || Box::new(it.next().expect("arity checked"));
            let node = match call.name.as_str() {
                "LOR" => Node::Lor(next(), next()),
                "LAND" => Node::Land(next(), next()),
                "OR" => Node::Or(next(), next()),
                "INDEX" => Node::Index(next(), next()),
                "conditional" => Node::Conditional(next(), next(), next()),
                "size" => Node::Size(next()),
                "EQ" | "NEQ" => {
                    let kind = match arg_ty {
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
                    };
                    Node::Eq {
                        lhs: next(),
                        rhs: next(),
                        kind,
                        negate: call.name == "NEQ",
                    }
                }
                "LT" | "LEQ" | "GT" | "GEQ" => {
                    let (op, what) = match call.name.as_str() {
                        "LT" => (CmpOp::Lt, "less than"),
                        "LEQ" => (CmpOp::Le, "less or equal"),
                        "GT" => (CmpOp::Gt, "greater than"),
                        _ => (CmpOp::Ge, "greater or equal"),
                    };
                    let kind = match arg_ty {
                        ValueType::Int64 => CmpKind::Int,
                        ValueType::Double => CmpKind::Double,
                        ValueType::String
                        | ValueType::DnsName
                        | ValueType::EmailAddress
                        | ValueType::Uri => CmpKind::Str,
                        ValueType::Timestamp => CmpKind::Timestamp,
                        other => return Err(self.not_implemented(what, other, offset)),
                    };
                    Node::Cmp {
                        lhs: next(),
                        rhs: next(),
                        op,
                        kind,
                    }
                }
                "ADD" => {
                    let kind = match arg_ty {
                        ValueType::Int64 => AddKind::Int,
                        ValueType::Double => AddKind::Double,
                        t if t.is_string_like() => AddKind::Str(t),
                        other => return Err(self.not_implemented("Add", other, offset)),
                    };
                    Node::Add(next(), next(), kind)
                }
                other => unreachable!("intrinsic without code: {other}"),
            };
            return Ok(node);
        }

        let ext = match &meta.implementation {
            FunctionImpl::Custom(f) => Extern::Custom(f.clone()),
            FunctionImpl::SignatureOnly => Extern::Unimplemented(call.name.as_str().into()),
            _ => match call.name.as_str() {
                "match" => Extern::Match,
                "matches" => Extern::Matches,
                "startsWith" => Extern::StartsWith,
                "endsWith" => Extern::EndsWith,
                "emptyStringMap" => Extern::EmptyStringMap,
                "conditionalString" => Extern::ConditionalString,
                "ip" => Extern::Ip,
                "timestamp" => Extern::Timestamp,
                "dnsName" => Extern::DnsName,
                "email" => Extern::Email,
                "uri" => Extern::Uri,
                "toLower" => Extern::ToLower,
                other => Extern::Unimplemented(other.into()),
            },
        };
        // Constant patterns are decided once, here.
        match (&ext, target.as_ref(), args.as_slice()) {
            (Extern::Match, None, [_, Node::Const(Value::String(p))]) => {
                let pattern = GlobPattern::new(p);
                let subject = args.into_iter().next().expect("two args");
                return Ok(Node::Glob(Box::new(subject), pattern));
            }
            (Extern::Matches, Some(Node::Const(Value::String(re))), [_]) => {
                // A rule whose pattern can never compile would never apply: refuse it now,
                // pointing at the pattern, rather than fail open on every request.
                let compiled = pattern::compile_constant(re).map_err(|message| {
                    let at = call.target.as_ref().map_or(offset, |t| t.offset);
                    CompileError::new(CompileErrorKind::Regex, message, self.source, Some(at))
                })?;
                let subject = args.into_iter().next().expect("one arg");
                return Ok(Node::MatchesConst(compiled, Box::new(subject)));
            }
            _ => {}
        }
        let operands: Vec<Node> = target.into_iter().chain(args).collect();
        Ok(Node::Call(ext, operands.into_boxed_slice()))
    }
}

/// Constant folding: a node whose operands are all constants is evaluated once, here.
/// Folding never hides an error: a constant subtree that fails keeps failing at run time,
/// and only short-circuits that evaluation itself would take are applied.
fn fold(node: Node) -> Node {
    match node {
        Node::Const(_) | Node::Attr(_) => node,
        Node::Call(Extern::Custom(_) | Extern::Unimplemented(_), _) => node,
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
            let bag = crate::bag::MapBag::new();
            let folded = node
                .eval(&mut Cx {
                    bag: &bag,
                    rec: NoRecording,
                })
                .map(Value::into_owned);
            match folded {
                Ok(v) => Node::Const(v),
                Err(_) => node,
            }
        }
        node => node,
    }
}

impl Node {
    /// `(slot, key)` when this node is a map attribute and `key` a constant string.
    #[inline]
    fn attr_and_const_key<'a>(&'a self, key: &'a Node) -> Option<(&'a AttrSlot, &'a str)> {
        match (self, key) {
            (Node::Attr(slot), Node::Const(Value::String(k))) => Some((slot, k)),
            _ => None,
        }
    }

    /// The direct operands of a node.
    fn operands(&self) -> Vec<&Node> {
        match self {
            Node::Const(_) | Node::Attr(_) => vec![],
            Node::Index(a, b)
            | Node::Or(a, b)
            | Node::Land(a, b)
            | Node::Lor(a, b)
            | Node::Add(a, b, _)
            | Node::Eq { lhs: a, rhs: b, .. }
            | Node::Cmp { lhs: a, rhs: b, .. } => vec![a, b],
            Node::Conditional(a, b, c) => vec![a, b, c],
            Node::Size(a) | Node::Glob(a, _) | Node::MatchesConst(_, a) => vec![a],
            Node::Call(_, ops) => ops.iter().collect(),
        }
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

/// The value a bag holds for an attribute, checked against the attribute's declared type.
fn coerce<'a>(v: Value<'a>, ty: ValueType) -> Result<Value<'a>, Fault> {
    let v = match (ty, v) {
        (ValueType::String, Value::String(s)) => Value::String(s),
        (ValueType::String, v @ (Value::DnsName(_) | Value::EmailAddress(_) | Value::Uri(_))) => {
            Value::String(as_cow(v))
        }
        (ValueType::DnsName, v) if v.as_str().is_some() => Value::DnsName(as_cow(v)),
        (ValueType::EmailAddress, v) if v.as_str().is_some() => Value::EmailAddress(as_cow(v)),
        (ValueType::Uri, v) if v.as_str().is_some() => Value::Uri(as_cow(v)),
        (ValueType::Int64, v @ Value::Int64(_))
        | (ValueType::Double, v @ Value::Double(_))
        | (ValueType::Bool, v @ Value::Bool(_))
        | (ValueType::Duration, v @ Value::Duration(_))
        | (ValueType::Timestamp, v @ Value::Timestamp(_))
        | (ValueType::IpAddress, v @ Value::IpAddress(_))
        | (ValueType::StringMap, v @ Value::StringMap(_)) => v,
        (ty, v) => {
            let kind = match ty {
                t if t.is_string_like() => "string",
                ValueType::Int64 | ValueType::Duration => "integer or duration",
                ValueType::Double => "double",
                ValueType::Bool => "bool",
                ValueType::Timestamp => "timestamp",
                ValueType::IpAddress => "ip address",
                _ => "string map",
            };
            return Err(type_mismatch(kind, &v));
        }
    };
    Ok(v)
}

/// The text of a string-like value, keeping its borrow.
fn as_cow(v: Value<'_>) -> Cow<'_, str> {
    match v {
        Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s) => s,
        other => Cow::Owned(other.to_string()),
    }
}

fn expect_str<'a>(v: Value<'a>) -> Result<Cow<'a, str>, Fault> {
    match v {
        Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s) => Ok(s),
        other => Err(type_mismatch("string", &other)),
    }
}

fn expect_bool(v: Value<'_>) -> Result<bool, Fault> {
    match v {
        Value::Bool(b) => Ok(b),
        other => Err(type_mismatch("bool", &other)),
    }
}

type MapWithOrigin<'a> = (StringMapRef<'a>, Option<&'a str>);

impl Node {
    /// Strict evaluation of a BOOL node. Boolean operators never build a `Value`, which
    /// keeps rule matching on registers rather than moving enums through memory.
    fn eval_bool<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        cx: &mut Cx<'a, B, R>,
    ) -> Result<bool, Fault> {
        match self {
            Node::Const(Value::Bool(b)) => Ok(*b),
            Node::Land(a, b) => Ok(a.eval_bool(cx)? && b.eval_bool(cx)?),
            Node::Lor(a, b) => Ok(a.eval_bool(cx)? || b.eval_bool(cx)?),
            Node::Eq {
                lhs,
                rhs,
                kind,
                negate,
            } => {
                let equal = match kind {
                    EqKind::Bool => lhs.eval_bool(cx)? == rhs.eval_bool(cx)?,
                    EqKind::Int => lhs.eval_i64(cx)? == rhs.eval_i64(cx)?,
                    EqKind::Str => lhs.with_str(cx, |a, cx| rhs.with_str(cx, |b, _| Ok(a == b)))?,
                    _ => {
                        let a = lhs.eval(cx)?;
                        let b = rhs.eval(cx)?;
                        equal(*kind, &a, &b)?
                    }
                };
                Ok(equal != *negate)
            }
            Node::Cmp {
                lhs,
                rhs,
                op,
                kind: CmpKind::Int,
            } => {
                let (a, b) = (lhs.eval_i64(cx)?, rhs.eval_i64(cx)?);
                Ok(ordered(*op, a.cmp(&b)))
            }
            Node::Cmp {
                lhs,
                rhs,
                op,
                kind: CmpKind::Str,
            } => lhs.with_str(cx, |a, cx| {
                rhs.with_str(cx, |b, _| Ok(ordered(*op, a.as_bytes().cmp(b.as_bytes()))))
            }),
            Node::Cmp { lhs, rhs, op, kind } => {
                let a = lhs.eval(cx)?;
                let b = rhs.eval(cx)?;
                compare(*op, *kind, &a, &b)
            }
            Node::Glob(subject, pattern) => subject.with_str(cx, |s, _| Ok(pattern.matches(s))),
            Node::MatchesConst(re, subject) => subject.with_str(cx, |s, _| Ok(re.is_match(s))),
            other => expect_bool(other.eval(cx)?),
        }
    }

    /// Strict evaluation of an INT64 node.
    fn eval_i64<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        cx: &mut Cx<'a, B, R>,
    ) -> Result<i64, Fault> {
        match self {
            Node::Const(Value::Int64(v)) => Ok(*v),
            Node::Attr(slot) if slot.ty == ValueType::Int64 => match cx.bag.get(slot.key()) {
                Some(Value::Int64(v)) => {
                    cx.rec.attribute(&slot.name, slot.ty, true);
                    Ok(v)
                }
                Some(other) => {
                    cx.rec.attribute(&slot.name, slot.ty, true);
                    Err(type_mismatch("integer or duration", &other))
                }
                None => {
                    cx.rec.attribute(&slot.name, slot.ty, false);
                    Err(Box::new(EvalError::LookupFailed(slot.name.to_string())))
                }
            },
            Node::Add(a, b, AddKind::Int) => Ok(a.eval_i64(cx)?.wrapping_add(b.eval_i64(cx)?)),
            Node::Size(s) => s.with_str(cx, |s, _| Ok(s.len() as i64)),
            other => match other.eval(cx)? {
                Value::Int64(v) => Ok(v),
                v => Err(type_mismatch("integer or duration", &v)),
            },
        }
    }

    /// Strict evaluation of a string-like node, handing the text to `f` without building
    /// a `Value` (or copying the text) when it comes straight from the bag or a constant.
    #[inline]
    fn with_str<'a, B: Bag + ?Sized, R: Recorder, T>(
        &'a self,
        cx: &mut Cx<'a, B, R>,
        f: impl FnOnce(&str, &mut Cx<'a, B, R>) -> Result<T, Fault>,
    ) -> Result<T, Fault> {
        match self {
            Node::Const(v) => match v.as_str() {
                Some(s) => f(s, cx),
                None => Err(type_mismatch("string", v)),
            },
            Node::Attr(slot) => {
                let bag: &'a B = cx.bag;
                match bag.get(slot.key()) {
                    Some(v) => {
                        cx.rec.attribute(&slot.name, slot.ty, true);
                        match &v {
                            Value::String(s)
                            | Value::DnsName(s)
                            | Value::EmailAddress(s)
                            | Value::Uri(s) => f(s, cx),
                            other => Err(type_mismatch("string", other)),
                        }
                    }
                    None => {
                        cx.rec.attribute(&slot.name, slot.ty, false);
                        Err(Box::new(EvalError::LookupFailed(slot.name.to_string())))
                    }
                }
            }
            Node::Index(map, key) if map.attr_and_const_key(key).is_some() => {
                let (slot, k) = map.attr_and_const_key(key).expect("checked by the guard");
                match index_attr(slot, k, cx)? {
                    Lookup::MapAbsent => {
                        Err(Box::new(EvalError::LookupFailed(slot.name.to_string())))
                    }
                    Lookup::KeyMissing => f("", cx),
                    Lookup::Found(v) => f(&v, cx),
                }
            }
            Node::Index(map, key) => {
                let Some((map, origin)) = map.map_value(cx, true)? else {
                    return Err(Box::new(EvalError::Function(
                        "string map did not resolve".to_owned(),
                    )));
                };
                // Not `key.with_str`: a closure nested in a generic closure would
                // instantiate without end.
                let k = expect_str(key.eval(cx)?)?;
                let found = map.get(&k);
                if let Some(origin) = origin {
                    cx.rec.map_key(origin, &k, found.is_some());
                }
                f(found.unwrap_or(""), cx)
            }
            other => {
                let v = other.eval(cx)?;
                let s = expect_str(v)?;
                f(&s, cx)
            }
        }
    }

    /// Strict evaluation.
    fn eval<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        cx: &mut Cx<'a, B, R>,
    ) -> Result<Value<'a>, Fault> {
        match self {
            Node::Const(v) => Ok(v.borrowed()),
            Node::Attr(slot) => match read(slot, cx)? {
                Some(v) => Ok(v),
                None => Err(Box::new(EvalError::LookupFailed(slot.name.to_string()))),
            },
            Node::Or(lhs, rhs) => match lhs.resolve(cx)? {
                Some(v) => Ok(v),
                None => rhs.eval(cx),
            },
            Node::Index(map, key) if map.attr_and_const_key(key).is_some() => {
                let (slot, k) = map.attr_and_const_key(key).expect("checked by the guard");
                match index_attr(slot, k, cx)? {
                    Lookup::MapAbsent => {
                        Err(Box::new(EvalError::LookupFailed(slot.name.to_string())))
                    }
                    Lookup::KeyMissing => Ok(Value::String(Cow::Borrowed(""))),
                    Lookup::Found(v) => Ok(Value::String(v)),
                }
            }
            Node::Index(map, key) => {
                let Some((map, origin)) = map.map_value(cx, true)? else {
                    return Err(Box::new(EvalError::Function(
                        "string map did not resolve".to_owned(),
                    )));
                };
                let key = expect_str(key.eval(cx)?)?;
                Ok(Value::String(
                    lookup(map, origin, &key, cx).unwrap_or(Cow::Borrowed("")),
                ))
            }
            Node::Land(..) | Node::Lor(..) | Node::Eq { .. } | Node::Cmp { .. } => {
                self.eval_bool(cx).map(Value::Bool)
            }
            Node::Add(lhs, rhs, kind) => {
                let a = lhs.eval(cx)?;
                let b = rhs.eval(cx)?;
                add(*kind, a, b)
            }
            Node::Conditional(c, a, b) => {
                if expect_bool(c.eval(cx)?)? {
                    a.eval(cx)
                } else {
                    b.eval(cx)
                }
            }
            Node::Size(s) => {
                let s = expect_str(s.eval(cx)?)?;
                Ok(Value::Int64(s.len() as i64))
            }
            Node::Glob(..) | Node::MatchesConst(..) => self.eval_bool(cx).map(Value::Bool),
            Node::Call(ext, operands) => call_extern(ext, operands, cx),
        }
    }

    /// Presence-aware evaluation for the left operand of `|`: `Ok(None)` when the operand
    /// does not resolve (absent attribute, absent map, missing key, unresolved key).
    fn resolve<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        cx: &mut Cx<'a, B, R>,
    ) -> Result<Option<Value<'a>>, Fault> {
        match self {
            Node::Attr(slot) => read(slot, cx),
            Node::Or(lhs, rhs) => match lhs.resolve(cx)? {
                Some(v) => Ok(Some(v)),
                None => rhs.resolve(cx),
            },
            Node::Index(map, key) if map.attr_and_const_key(key).is_some() => {
                let (slot, k) = map.attr_and_const_key(key).expect("checked by the guard");
                match index_attr(slot, k, cx)? {
                    Lookup::MapAbsent | Lookup::KeyMissing => Ok(None),
                    Lookup::Found(v) => Ok(Some(Value::String(v))),
                }
            }
            Node::Index(map, key) => {
                let Some((map, origin)) = map.map_value(cx, false)? else {
                    return Ok(None);
                };
                let Some(key) = key.resolve(cx)? else {
                    return Ok(None);
                };
                let key = expect_str(key)?;
                Ok(lookup(map, origin, &key, cx).map(Value::String))
            }
            // Constants, calls and operators always resolve (see DIFFERENCES.md for the
            // operators, where Mixer's code generator differed).
            other => other.eval(cx).map(Some),
        }
    }

    /// A STRING_MAP-typed node's map, with the attribute it came from (for recording key
    /// lookups). Non-strict mode returns `Ok(None)` when the map does not resolve.
    fn map_value<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        cx: &mut Cx<'a, B, R>,
        strict: bool,
    ) -> Result<Option<MapWithOrigin<'a>>, Fault> {
        match self {
            Node::Attr(slot) => match read(slot, cx)? {
                Some(Value::StringMap(m)) => Ok(Some((m, Some(&*slot.name)))),
                Some(other) => Err(type_mismatch("string map", &other)),
                None if strict => Err(Box::new(EvalError::LookupFailed(slot.name.to_string()))),
                None => Ok(None),
            },
            Node::Or(lhs, rhs) => match lhs.map_value(cx, false)? {
                Some(m) => Ok(Some(m)),
                None => rhs.map_value(cx, strict),
            },
            Node::Conditional(c, a, b) => {
                if expect_bool(c.eval(cx)?)? {
                    a.map_value(cx, true)
                } else {
                    b.map_value(cx, true)
                }
            }
            other => match other.eval(cx)? {
                Value::StringMap(m) => Ok(Some((m, None))),
                v => Err(type_mismatch("string map", &v)),
            },
        }
    }
}

/// The outcome of `map_attribute["constant key"]`.
enum Lookup<'a> {
    MapAbsent,
    KeyMissing,
    Found(Cow<'a, str>),
}

/// `attr["constant"]`, by far the most common index (`source.labels["app"]`,
/// `request.headers["user-agent"]`), without building intermediate values.
#[inline(always)]
fn index_attr<'a, B: Bag + ?Sized, R: Recorder>(
    slot: &'a AttrSlot,
    key: &str,
    cx: &mut Cx<'a, B, R>,
) -> Result<Lookup<'a>, Fault> {
    let bag: &'a B = cx.bag;
    match bag.get(slot.key()) {
        None => {
            cx.rec.attribute(&slot.name, slot.ty, false);
            Ok(Lookup::MapAbsent)
        }
        Some(Value::StringMap(m)) => {
            cx.rec.attribute(&slot.name, slot.ty, true);
            let found = match m {
                StringMapRef::Borrowed(m) => m.get(key).map(Cow::Borrowed),
                StringMapRef::Owned(m) => m.get(key).map(|v| Cow::Owned(v.clone())),
            };
            cx.rec.map_key(&slot.name, key, found.is_some());
            Ok(found.map_or(Lookup::KeyMissing, Lookup::Found))
        }
        Some(other) => {
            cx.rec.attribute(&slot.name, slot.ty, true);
            Err(type_mismatch("string map", &other))
        }
    }
}

#[inline]
fn read<'a, B: Bag + ?Sized, R: Recorder>(
    slot: &'a AttrSlot,
    cx: &mut Cx<'a, B, R>,
) -> Result<Option<Value<'a>>, Fault> {
    match cx.bag.get(slot.key()) {
        None => {
            cx.rec.attribute(&slot.name, slot.ty, false);
            Ok(None)
        }
        Some(v) => {
            cx.rec.attribute(&slot.name, slot.ty, true);
            coerce(v, slot.ty).map(Some)
        }
    }
}

fn lookup<'a, B: Bag + ?Sized, R: Recorder>(
    map: StringMapRef<'a>,
    origin: Option<&str>,
    key: &str,
    cx: &mut Cx<'a, B, R>,
) -> Option<Cow<'a, str>> {
    let found = match map {
        StringMapRef::Borrowed(m) => m.get(key).map(Cow::Borrowed),
        StringMapRef::Owned(m) => m.get(key).map(|v| Cow::Owned(v.clone())),
    };
    if let Some(origin) = origin {
        cx.rec.map_key(origin, key, found.is_some());
    }
    found
}

fn equal(kind: EqKind, a: &Value<'_>, b: &Value<'_>) -> Result<bool, Fault> {
    let lib = |m: String| Box::new(EvalError::Function(m));
    Ok(match (kind, a, b) {
        (EqKind::Int, Value::Int64(x), Value::Int64(y)) => x == y,
        // Mixer compared doubles by bit pattern: 0.0 != -0.0.
        (EqKind::Double, Value::Double(x), Value::Double(y)) => x.to_bits() == y.to_bits(),
        (EqKind::Bool, Value::Bool(x), Value::Bool(y)) => x == y,
        (EqKind::Ip, Value::IpAddress(x), Value::IpAddress(y)) => golib::net::ip_equal(x, y),
        (EqKind::Timestamp, Value::Timestamp(x), Value::Timestamp(y)) => x.same_instant(y),
        (kind, a, b) => {
            let (Some(x), Some(y)) = (a.as_str(), b.as_str()) else {
                return Err(type_mismatch("comparable value", b));
            };
            match kind {
                EqKind::Dns => golib::dns::dns_equal(x, y).map_err(lib)?,
                EqKind::Email => golib::mail::email_equal(x, y).map_err(lib)?,
                EqKind::Uri => {
                    // Mixer reported URI parse failures in `==` the way `uri()` does.
                    for side in [x, y] {
                        if let Err(m) = golib::url::validate_uri(side) {
                            return Err(lib(format!(
                                "error converting string to uri '{side}': '{m}'"
                            )));
                        }
                    }
                    golib::url::uri_equal(x, y).map_err(lib)?
                }
                _ => x == y,
            }
        }
    })
}

fn compare(op: CmpOp, kind: CmpKind, a: &Value<'_>, b: &Value<'_>) -> Result<bool, Fault> {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (kind, a, b) {
        (CmpKind::Int, Value::Int64(x), Value::Int64(y)) => Some(x.cmp(y)),
        (CmpKind::Double, Value::Double(x), Value::Double(y)) => x.partial_cmp(y),
        (CmpKind::Timestamp, Value::Timestamp(x), Value::Timestamp(y)) => {
            return Ok(timestamp_compare(op, x, y));
        }
        (CmpKind::Str, a, b) => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
            _ => return Err(type_mismatch("comparable value", b)),
        },
        _ => return Err(type_mismatch("comparable value", b)),
    };
    let Some(ord) = ord else {
        return Ok(false);
    };
    Ok(match op {
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    })
}

fn ordered(op: CmpOp, ord: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering;
    match op {
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    }
}

/// Mixer defined `<=` on timestamps as "before, or the identical Go time value", and Go's
/// identity includes the zone: equal instants written in different zones are neither `<=`
/// nor `>=`. Kept, because it is observable, documented behaviour.
fn timestamp_compare(op: CmpOp, x: &Timestamp, y: &Timestamp) -> bool {
    use std::cmp::Ordering;
    let ord = x.instant_cmp(y);
    let identical = ord == Ordering::Equal && x.offset_secs == y.offset_secs;
    match op {
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Le => ord == Ordering::Less || identical,
        CmpOp::Ge => ord == Ordering::Greater || identical,
    }
}

fn add<'a>(kind: AddKind, a: Value<'a>, b: Value<'a>) -> Result<Value<'a>, Fault> {
    Ok(match (kind, a, b) {
        (AddKind::Int, Value::Int64(x), Value::Int64(y)) => Value::Int64(x.wrapping_add(y)),
        (AddKind::Double, Value::Double(x), Value::Double(y)) => Value::Double(x + y),
        (AddKind::Str(ty), a, b) => {
            let (x, y) = (expect_str(a)?, expect_str(b)?);
            let mut s = String::with_capacity(x.len() + y.len());
            s.push_str(&x);
            s.push_str(&y);
            let s = Cow::Owned(s);
            match ty {
                ValueType::DnsName => Value::DnsName(s),
                ValueType::EmailAddress => Value::EmailAddress(s),
                ValueType::Uri => Value::Uri(s),
                _ => Value::String(s),
            }
        }
        (_, _, b) => return Err(type_mismatch("number", &b)),
    })
}

fn call_extern<'a, B: Bag + ?Sized, R: Recorder>(
    ext: &'a Extern,
    operands: &'a [Node],
    cx: &mut Cx<'a, B, R>,
) -> Result<Value<'a>, Fault> {
    let arg =
        |i: usize, cx: &mut Cx<'a, B, R>| -> Result<Value<'a>, Fault> { operands[i].eval(cx) };
    let fail = |msg: String| Err(Box::new(EvalError::Function(msg)));
    match ext {
        Extern::Match => {
            let s = expect_str(arg(0, cx)?)?;
            let p = expect_str(arg(1, cx)?)?;
            Ok(Value::Bool(GlobPattern::new(&p).matches(&s)))
        }
        Extern::Matches => {
            // The target is the regular expression; the argument is the subject. The
            // pattern is request data here: compiled under small limits, and cached.
            let re = expect_str(arg(0, cx)?)?;
            let s = expect_str(arg(1, cx)?)?;
            match pattern::runtime_pattern(&re) {
                Ok(r) => Ok(Value::Bool(r.is_match(&s))),
                Err(message) => fail(message.to_string()),
            }
        }
        Extern::StartsWith => {
            let s = expect_str(arg(0, cx)?)?;
            let p = expect_str(arg(1, cx)?)?;
            Ok(Value::Bool(s.starts_with(&*p)))
        }
        Extern::EndsWith => {
            let s = expect_str(arg(0, cx)?)?;
            let p = expect_str(arg(1, cx)?)?;
            Ok(Value::Bool(s.ends_with(&*p)))
        }
        Extern::EmptyStringMap => Ok(Value::StringMap(StringMapRef::Borrowed(&EMPTY_MAP))),
        Extern::ConditionalString => {
            // Unlike `conditional`, Mixer evaluated both branches.
            let c = expect_bool(arg(0, cx)?)?;
            let a = expect_str(arg(1, cx)?)?;
            let b = expect_str(arg(2, cx)?)?;
            Ok(Value::String(if c { a } else { b }))
        }
        Extern::Ip => {
            let s = expect_str(arg(0, cx)?)?;
            match golib::net::parse_ip(&s) {
                Some(bytes) => Ok(Value::IpAddress(Cow::Owned(bytes.to_vec()))),
                None => fail(format!("could not convert {s} to IP_ADDRESS")),
            }
        }
        Extern::Timestamp => {
            let s = expect_str(arg(0, cx)?)?;
            match golib::time::parse_rfc3339(&s) {
                Some(t) => Ok(Value::Timestamp(t)),
                None => fail(format!(
                    "could not convert '{s}' to TIMESTAMP. expected format: '2006-01-02T15:04:05Z07:00'"
                )),
            }
        }
        Extern::DnsName => {
            let s = expect_str(arg(0, cx)?)?;
            match golib::dns::to_unicode(&s) {
                Ok(u) if u == *s => Ok(Value::DnsName(s)),
                Ok(u) => Ok(Value::DnsName(Cow::Owned(u))),
                Err(m) => fail(format!("error converting '{s}' to dns name: '{m}'")),
            }
        }
        Extern::Email => {
            let s = expect_str(arg(0, cx)?)?;
            match golib::mail::validate_email(&s) {
                Ok(()) => Ok(Value::EmailAddress(s)),
                Err(m) if m == "display names are not allowed" => {
                    fail(format!("error converting '{s}' to e-mail: {m}"))
                }
                Err(m) => fail(format!("error converting '{s}' to e-mail: '{m}'")),
            }
        }
        Extern::Uri => {
            let s = expect_str(arg(0, cx)?)?;
            if s.is_empty() {
                return fail("error converting string to uri: empty string".to_owned());
            }
            match golib::url::validate_uri(&s) {
                Ok(()) => Ok(Value::Uri(s)),
                Err(m) => fail(format!("error converting string to uri '{s}': '{m}'")),
            }
        }
        Extern::ToLower => {
            let s = expect_str(arg(0, cx)?)?;
            if !s.chars().any(char::is_uppercase) {
                return Ok(Value::String(s));
            }
            // Go maps rune by rune, with no context-dependent rules (final sigma).
            let lowered: String = s.chars().flat_map(char::to_lowercase).collect();
            Ok(Value::String(Cow::Owned(lowered)))
        }
        Extern::Custom(f) => {
            let mut values = Vec::with_capacity(operands.len());
            for i in 0..operands.len() {
                values.push(arg(i, cx)?);
            }
            f(&values).map_err(Box::new)
        }
        Extern::Unimplemented(name) => fail(format!(
            "function '{name}' is declared but has no implementation"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bag::MapBag;
    use crate::referenced::ReferencedSet;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn manifest() -> Manifest {
        Manifest::from_pairs([
            ("abc", ValueType::String),
            ("bs", ValueType::String),
            ("ai", ValueType::Int64),
            ("ar", ValueType::StringMap),
            ("br", ValueType::StringMap),
            ("rd", ValueType::Duration),
        ])
    }

    fn map(entries: &[(&str, &str)]) -> Value<'static> {
        let m: BTreeMap<String, String> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Value::StringMap(StringMapRef::Owned(Arc::new(m)))
    }

    fn run(src: &str, bag: &MapBag) -> (Result<Value<'static>, String>, Vec<String>) {
        let p = Program::compile(src, &manifest()).unwrap();
        let mut rec = ReferencedSet::new();
        let r = p
            .evaluate_recorded(bag, &mut rec)
            .map(Value::into_owned)
            .map_err(|e| e.to_string());
        (r, rec.encoded())
    }

    #[test]
    fn first_present_semantics() {
        let empty = MapBag::new();
        assert_eq!(
            run("abc | \"x\"", &empty).0,
            Ok(Value::str("x").into_owned())
        );
        let bag = MapBag::new().with("abc", Value::str(""));
        assert_eq!(run("abc | \"x\"", &bag).0, Ok(Value::str("").into_owned()));
        assert_eq!(run("rd | \"0ms\"", &empty).0, Ok(Value::Duration(0)));
        assert_eq!(
            run("abc | bs", &empty).0,
            Err("lookup failed: 'bs'".to_owned())
        );
        let bag = MapBag::new().with("ar", map(&[]));
        let (v, refs) = run("ar[\"b\"] | ar[\"c\"] | \"null\"", &bag);
        assert_eq!(v, Ok(Value::str("null").into_owned()));
        assert_eq!(refs, vec!["-ar[b]", "-ar[c]", "ar"]);
        let (v, refs) = run("ar[abc] | \"foo\"", &empty);
        assert_eq!(v, Ok(Value::str("foo").into_owned()));
        assert_eq!(refs, vec!["-ar"]);
        let bag = MapBag::new().with("br", map(&[("k", "v")]));
        let (v, refs) = run("(ar | br)[\"foo\"]", &bag);
        assert_eq!(v, Ok(Value::str("").into_owned()));
        assert_eq!(refs, vec!["-ar", "-br[foo]", "br"]);
    }

    #[test]
    fn short_circuit_records_only_reads() {
        let bag = MapBag::new()
            .with("ai", Value::Int64(20))
            .with("ar", map(&[("foo", "bar")]));
        let (v, refs) = run("ai == 20 || ar[\"foo\"] == \"bar\"", &bag);
        assert_eq!(v, Ok(Value::Bool(true)));
        assert_eq!(refs, vec!["ai"]);
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
    }

    #[test]
    fn constant_regex_that_cannot_compile_is_a_compile_error_at_the_pattern() {
        let m = manifest();
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
    fn regex_computed_from_the_bag_fails_at_evaluation_without_echoing_it() {
        let bag = MapBag::new()
            .with("abc", Value::str(r"token=s3cret(\w{100}){100}"))
            .with("bs", Value::str("x"));
        let (r, _) = run("abc.matches(bs)", &bag);
        let e = r.unwrap_err();
        assert!(e.contains("expression too large"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let bag = MapBag::new()
            .with("abc", Value::str("^/adm.n"))
            .with("bs", Value::str("/admin"));
        assert_eq!(run("abc.matches(bs)", &bag).0, Ok(Value::Bool(true)));
    }

    #[test]
    fn ill_typed_bag_value_is_a_conversion_error() {
        let bag = MapBag::new().with("abc", Value::Int64(20));
        assert_eq!(
            run("abc == \"x\"", &bag).0,
            Err("error converting value to string: '20'".to_owned())
        );
    }
}
