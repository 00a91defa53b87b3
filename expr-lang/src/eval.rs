//! Running a compiled [`Node`] tree against a [`Bag`].
//!
//! Evaluation has two modes per node, following Mixer's `|` semantics:
//! `eval` is strict (an absent attribute is `lookup failed`), and `resolve` answers
//! "does this operand resolve?" for the left side of `|`, where absent attributes, absent
//! maps and missing map keys fall through to the right side instead of failing. BOOL,
//! INT64 and string nodes also have specialised strict modes (`eval_bool`, `eval_i64`,
//! `with_str`) that avoid building a [`Value`] on the hot paths of rule matching.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::bag::Bag;
use crate::error::EvalError;
use crate::functions::{CmpOp, Conversion, CustomFn, StringTest};
use crate::golib;
use crate::golib::time::Timestamp;
use crate::node::{AddKind, AttrSlot, CmpKind, EqKind, GlobPattern, Node};
use crate::pattern;
use crate::referenced::Recorder;
use crate::value::{EMPTY_MAP, StringMapRef, Value, ValueType};

/// Evaluation errors travel boxed inside the evaluator so that `Result`s stay two words
/// wide and are returned in registers; the public API unboxes them.
type Fault = Box<EvalError>;

struct Cx<'a, B: ?Sized, R> {
    bag: &'a B,
    rec: R,
}

impl Node {
    /// Strict evaluation from the root, the entry point of `Program::evaluate*`.
    #[inline]
    pub(crate) fn evaluate<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        bag: &'a B,
        rec: R,
    ) -> Result<Value<'a>, EvalError> {
        self.eval(&mut Cx { bag, rec }).map_err(|e| *e)
    }

    /// As [`Node::evaluate`], keeping the error boxed (a smaller result, for callers that
    /// pass it on).
    #[inline]
    pub(crate) fn evaluate_boxed<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        bag: &'a B,
        rec: R,
    ) -> Result<Value<'a>, Box<EvalError>> {
        self.eval(&mut Cx { bag, rec })
    }

    /// As [`Node::evaluate`], for a BOOL program.
    #[inline]
    pub(crate) fn evaluate_bool<B: Bag + ?Sized, R: Recorder>(
        &self,
        bag: &B,
        rec: R,
    ) -> Result<bool, EvalError> {
        self.eval_bool(&mut Cx { bag, rec }).map_err(|e| *e)
    }
}

fn type_mismatch(kind: &'static str, v: &Value<'_>) -> Fault {
    Box::new(EvalError::Conversion {
        kind,
        value: v.to_string(),
    })
}

/// The value a bag holds for an attribute, checked against the attribute's declared type.
#[inline]
fn coerce<'a>(v: Value<'a>, ty: ValueType) -> Result<Value<'a>, Fault> {
    // Nearly every bag value has its declared type already, and is kept as it is.
    if v.value_type() == ty {
        return Ok(v);
    }
    convert_to_declared(v, ty)
}

/// `coerce` for a value of another type than the declared one.
fn convert_to_declared<'a>(v: Value<'a>, ty: ValueType) -> Result<Value<'a>, Fault> {
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
            Node::Test(test, a, b) => string_test(*test, a, b, cx),
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
            Node::Glob(..) | Node::MatchesConst(..) | Node::Test(..) => {
                self.eval_bool(cx).map(Value::Bool)
            }
            Node::Convert(conversion, s) => convert(*conversion, s, cx),
            Node::ConditionalString(c, a, b) => conditional_string(c, a, b, cx),
            Node::EmptyStringMap => Ok(Value::StringMap(StringMapRef::Borrowed(&EMPTY_MAP))),
            Node::Custom(f, operands) => call_custom(f, operands, cx),
            Node::Unimplemented(name) => Err(unimplemented(name)),
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
    Ok(ord.is_some_and(|ord| ordered(op, ord)))
}

fn ordered(op: CmpOp, ord: Ordering) -> bool {
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

// The builtins below stay out of line (`inline(never)`): inlined into `eval` or
// `eval_bool`, they would enlarge the stack frame of every recursive call to those,
// including the common ones.

/// `match`, `matches`, `startsWith`, `endsWith` on two strings evaluated in order: the
/// target (or first argument), then the other.
#[inline(never)]
fn string_test<'a, B: Bag + ?Sized, R: Recorder>(
    test: StringTest,
    a: &'a Node,
    b: &'a Node,
    cx: &mut Cx<'a, B, R>,
) -> Result<bool, Fault> {
    let a = expect_str(a.eval(cx)?)?;
    let b = expect_str(b.eval(cx)?)?;
    match test {
        StringTest::Match => Ok(GlobPattern::new(&b).matches(&a)),
        StringTest::Matches => {
            // The target is the regular expression; the argument is the subject. The
            // pattern is request data here: compiled under small limits, and cached.
            match pattern::runtime_pattern(&a) {
                Ok(r) => Ok(r.is_match(&b)),
                Err(message) => Err(Box::new(EvalError::Function(message.to_string()))),
            }
        }
        StringTest::StartsWith => Ok(a.starts_with(&*b)),
        StringTest::EndsWith => Ok(a.ends_with(&*b)),
    }
}

/// `ip`, `timestamp`, `dnsName`, `email`, `uri`, `toLower`, with Mixer's error texts.
#[inline(never)]
fn convert<'a, B: Bag + ?Sized, R: Recorder>(
    conversion: Conversion,
    s: &'a Node,
    cx: &mut Cx<'a, B, R>,
) -> Result<Value<'a>, Fault> {
    let s = expect_str(s.eval(cx)?)?;
    let fail = |msg: String| Err(Box::new(EvalError::Function(msg)));
    match conversion {
        Conversion::Ip => match golib::net::parse_ip(&s) {
            Some(bytes) => Ok(Value::IpAddress(Cow::Owned(bytes.to_vec()))),
            None => fail(format!("could not convert {s} to IP_ADDRESS")),
        },
        Conversion::Timestamp => match golib::time::parse_rfc3339(&s) {
            Some(t) => Ok(Value::Timestamp(t)),
            None => fail(format!(
                "could not convert '{s}' to TIMESTAMP. expected format: '2006-01-02T15:04:05Z07:00'"
            )),
        },
        Conversion::DnsName => match golib::dns::to_unicode(&s) {
            Ok(u) if u == *s => Ok(Value::DnsName(s)),
            Ok(u) => Ok(Value::DnsName(Cow::Owned(u))),
            Err(m) => fail(format!("error converting '{s}' to dns name: '{m}'")),
        },
        Conversion::Email => match golib::mail::validate_email(&s) {
            Ok(()) => Ok(Value::EmailAddress(s)),
            Err(m) if m == "display names are not allowed" => {
                fail(format!("error converting '{s}' to e-mail: {m}"))
            }
            Err(m) => fail(format!("error converting '{s}' to e-mail: '{m}'")),
        },
        Conversion::Uri => {
            if s.is_empty() {
                return fail("error converting string to uri: empty string".to_owned());
            }
            match golib::url::validate_uri(&s) {
                Ok(()) => Ok(Value::Uri(s)),
                Err(m) => fail(format!("error converting string to uri '{s}': '{m}'")),
            }
        }
        Conversion::ToLower => {
            if !s.chars().any(char::is_uppercase) {
                return Ok(Value::String(s));
            }
            // Go maps rune by rune, with no context-dependent rules (final sigma).
            let lowered: String = s.chars().flat_map(char::to_lowercase).collect();
            Ok(Value::String(Cow::Owned(lowered)))
        }
    }
}

/// Unlike `conditional`, Mixer evaluated both branches of `conditionalString`.
#[inline(never)]
fn conditional_string<'a, B: Bag + ?Sized, R: Recorder>(
    c: &'a Node,
    a: &'a Node,
    b: &'a Node,
    cx: &mut Cx<'a, B, R>,
) -> Result<Value<'a>, Fault> {
    let c = expect_bool(c.eval(cx)?)?;
    let a = expect_str(a.eval(cx)?)?;
    let b = expect_str(b.eval(cx)?)?;
    Ok(Value::String(if c { a } else { b }))
}

#[cold]
fn unimplemented(name: &str) -> Fault {
    Box::new(EvalError::Function(format!(
        "function '{name}' is declared but has no implementation"
    )))
}

/// A host function: every operand evaluated strictly, left to right, then the call.
#[inline(never)]
fn call_custom<'a, B: Bag + ?Sized, R: Recorder>(
    f: &CustomFn,
    operands: &'a [Node],
    cx: &mut Cx<'a, B, R>,
) -> Result<Value<'a>, Fault> {
    let mut values = Vec::with_capacity(operands.len());
    for operand in operands {
        values.push(operand.eval(cx)?);
    }
    f(&values).map_err(Box::new)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use crate::bag::MapBag;
    use crate::manifest::Manifest;
    use crate::program::Program;
    use crate::referenced::ReferencedSet;
    use crate::value::{StringMapRef, Value, ValueType};

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
