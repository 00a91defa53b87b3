//! Text → [`Expr`]. The pest grammar accepts Go's expression shapes (Mixer parsed with Go's
//! own parser); this module then converts the Go-shaped tree into CEXL's tree with Mixer's
//! rules, rejecting unsupported forms as `unexpected expression`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use pest::Parser as _;
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};

use crate::ast::{Expr, ExprKind, Literal};
use crate::error::{CompileError, CompileErrorKind};
use crate::golib;

#[derive(pest_derive::Parser)]
#[grammar = "grammar/cexl.pest"]
struct CexlParser;

/// Deepest bracket nesting accepted. It bounds the grammar's recursion, so hostile input
/// cannot exhaust the stack of the thread compiling it.
pub const MAX_NESTING: usize = 64;
/// Deepest expression tree accepted (a chain `a || b || ...` is as deep as it is long).
pub const MAX_DEPTH: usize = 512;
/// Most tokens accepted in one expression.
pub const MAX_TOKENS: usize = 8192;

/// Parses an expression into Mixer's tree shape.
pub fn parse(src: &str) -> Result<Expr, CompileError> {
    prescan(src)?;
    let mut pairs = CexlParser::parse(Rule::expression, src).map_err(|e| syntax_error(src, &e))?;
    let expression = pairs.next().expect("expression rule");
    let expr_pair = expression
        .into_inner()
        .next()
        .expect("expression holds expr");
    let go = build_expr(expr_pair);
    if go.depth() > MAX_DEPTH {
        return Err(CompileError::new(
            CompileErrorKind::TooDeep,
            format!("expression is nested more than {MAX_DEPTH} levels deep"),
            src,
            Some(0),
        ));
    }
    convert(&go, src)
}

fn parse_error_message(src: &str, line: usize, col: usize, what: &str) -> String {
    format!("unable to parse expression '{src}': {line}:{col}: {what}")
}

fn found_at(src: &str, offset: usize) -> String {
    match src[offset..].chars().next() {
        None => "'EOF'".to_owned(),
        Some(c) => format!("'{c}'"),
    }
}

fn syntax_error(src: &str, e: &pest::error::Error<Rule>) -> CompileError {
    let offset = match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    let (line, col) = match e.line_col {
        pest::error::LineColLocation::Pos(lc) => lc,
        pest::error::LineColLocation::Span(lc, _) => lc,
    };
    let rest = src[offset..].trim_start();
    let what = if rest.is_empty() {
        "expected operand, found 'EOF'".to_owned()
    } else {
        format!("unexpected {}", found_at(src, offset))
    };
    CompileError::new(
        CompileErrorKind::Syntax,
        parse_error_message(src, line, col, &what),
        src,
        Some(offset),
    )
}

/// Checks what the grammar cannot express conveniently: Go's automatic semicolon after a
/// line that ends in an operand (so `"ai\n== 1"` is an error while `"ai ==\n1"` is not),
/// and the nesting and size limits.
fn prescan(src: &str) -> Result<(), CompileError> {
    let bytes = src.as_bytes();
    let mut i = 0;
    let mut depth = 0usize;
    let mut tokens = 0usize;
    let mut can_end = false;
    let mut semicolon_at: Option<usize> = None;
    let err = |kind: CompileErrorKind, msg: String, at: usize| -> CompileError {
        CompileError::new(kind, msg, src, Some(at))
    };
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'\n' => {
                if can_end && semicolon_at.is_none() {
                    semicolon_at = Some(i);
                }
                can_end = false;
                i += 1;
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = src[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |p| i + 2 + p + 2);
                if src[i..end].contains('\n') && can_end && semicolon_at.is_none() {
                    semicolon_at = Some(i);
                    can_end = false;
                }
                i = end;
                continue;
            }
            _ => {}
        }
        // A token starts here.
        if let Some(at) = semicolon_at {
            let (line, col) = line_col(src, i);
            let _ = at;
            return Err(err(
                CompileErrorKind::Syntax,
                parse_error_message(
                    src,
                    line,
                    col,
                    &format!("expected 'EOF', found {}", found_at(src, i)),
                ),
                i,
            ));
        }
        tokens += 1;
        if tokens > MAX_TOKENS {
            return Err(err(
                CompileErrorKind::TooDeep,
                format!("expression has more than {MAX_TOKENS} tokens"),
                i,
            ));
        }
        match c {
            b'"' | b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                can_end = true;
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
                i += 1;
                can_end = true;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(err(
                        CompileErrorKind::TooDeep,
                        format!("expression nests brackets more than {MAX_NESTING} deep"),
                        i,
                    ));
                }
                i += 1;
                can_end = false;
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
                can_end = true;
            }
            b'+' | b'-' if bytes.get(i + 1) == Some(&c) => {
                i += 2;
                can_end = true;
            }
            _ if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 => {
                // Identifier, keyword or number (a number may hold '.', as in 1.5).
                let number = c.is_ascii_digit();
                while i < bytes.len() {
                    let b = bytes[i];
                    if b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80 || (number && b == b'.')
                    {
                        i += 1;
                    } else {
                        break;
                    }
                }
                can_end = true;
            }
            b'.' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                can_end = true;
            }
            _ => {
                i += 1;
                can_end = false;
            }
        }
    }
    Ok(())
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |p| p + 1);
    (line, before[start..].chars().count() + 1)
}

/// Go's expression tree, just as much of it as Mixer's converter looks at.
enum GoExpr {
    Ident(String, usize),
    Lit(LitKind, String, usize),
    Paren(Box<GoExpr>),
    Selector(Box<GoExpr>, String, usize),
    Call(Box<GoExpr>, Vec<GoExpr>, usize),
    Index(Box<GoExpr>, Box<GoExpr>, usize),
    /// A unary or binary operator, by Mixer's function name for it.
    Op(&'static str, Vec<GoExpr>, usize),
    /// A Go form CEXL has no meaning for (slice, composite literal, `*x`, ...).
    Unsupported(&'static str, usize),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LitKind {
    Int,
    Float,
    Imaginary,
    String,
    RawString,
    Rune,
}

impl GoExpr {
    fn offset(&self) -> usize {
        match self {
            GoExpr::Ident(_, o)
            | GoExpr::Lit(_, _, o)
            | GoExpr::Selector(_, _, o)
            | GoExpr::Call(_, _, o)
            | GoExpr::Index(_, _, o)
            | GoExpr::Op(_, _, o)
            | GoExpr::Unsupported(_, o) => *o,
            GoExpr::Paren(inner) => inner.offset().saturating_sub(1),
        }
    }

    fn children(&self) -> Vec<&GoExpr> {
        match self {
            GoExpr::Ident(..) | GoExpr::Lit(..) | GoExpr::Unsupported(..) => vec![],
            GoExpr::Paren(x) | GoExpr::Selector(x, _, _) => vec![x],
            GoExpr::Call(f, args, _) => std::iter::once(&**f).chain(args.iter()).collect(),
            GoExpr::Index(x, i, _) => vec![x, i],
            GoExpr::Op(_, args, _) => args.iter().collect(),
        }
    }

    /// Tree depth, computed iteratively so that it is safe on hostile input.
    fn depth(&self) -> usize {
        let mut max = 0;
        let mut stack = vec![(self, 1usize)];
        while let Some((e, d)) = stack.pop() {
            max = max.max(d);
            if d > MAX_DEPTH {
                break;
            }
            for c in e.children() {
                stack.push((c, d + 1));
            }
        }
        max
    }
}

/// Go's binary operators, loosest first. Every one is left-associative.
static BINARY_OPERATORS: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    let left = |rule| Op::infix(rule, Assoc::Left);
    PrattParser::new()
        .op(left(Rule::lor))
        .op(left(Rule::land))
        .op(left(Rule::eq)
            | left(Rule::neq)
            | left(Rule::lt)
            | left(Rule::le)
            | left(Rule::gt)
            | left(Rule::ge))
        .op(left(Rule::add) | left(Rule::sub) | left(Rule::or) | left(Rule::xor))
        .op(left(Rule::mul)
            | left(Rule::quo)
            | left(Rule::rem)
            | left(Rule::shl)
            | left(Rule::shr)
            | left(Rule::and)
            | left(Rule::and_not))
});

/// Mixer's function name for a binary operator.
fn binary_name(rule: Rule) -> &'static str {
    match rule {
        Rule::lor => "LOR",
        Rule::land => "LAND",
        Rule::eq => "EQ",
        Rule::neq => "NEQ",
        Rule::lt => "LT",
        Rule::le => "LEQ",
        Rule::gt => "GT",
        Rule::ge => "GEQ",
        Rule::add => "ADD",
        Rule::sub => "SUB",
        Rule::or => "OR",
        Rule::xor => "XOR",
        Rule::mul => "MUL",
        Rule::quo => "QUO",
        Rule::rem => "REM",
        Rule::and => "AND",
        // Go's <<, >> and &^ have no function name in Mixer.
        Rule::shl | Rule::shr | Rule::and_not => "",
        // The Pratt parser hands over only the operators it was built with, above.
        other => unreachable!("not a binary operator: {other:?}"),
    }
}

/// Mixer's function name for a unary operator; `None` for `*`, which CEXL rejects.
fn unary_name(rule: Rule) -> Option<&'static str> {
    match rule {
        Rule::u_plus => Some("ADD"),
        Rule::u_minus => Some("SUB"),
        Rule::u_not => Some("NOT"),
        Rule::u_xor => Some("XOR"),
        Rule::u_and => Some("AND"),
        Rule::u_recv => Some(""),
        _ => None,
    }
}

/// Builds the tree of one `expr`: operands joined by binary operators, by precedence.
fn build_expr(pair: Pair<'_, Rule>) -> GoExpr {
    BINARY_OPERATORS
        .map_primary(build_unary)
        .map_infix(|lhs, op, rhs| {
            let offset = lhs.offset().min(op.as_span().start());
            GoExpr::Op(binary_name(op.as_rule()), vec![lhs, rhs], offset)
        })
        .parse(pair.into_inner())
}

/// Builds a `unary_expr`: prefix operators applied to a postfix expression, innermost
/// first. A loop rather than the Pratt parser's prefix operators, which recurse once per
/// operator: `!!!…a` is bounded only by the token limit.
fn build_unary(pair: Pair<'_, Rule>) -> GoExpr {
    let mut inner: Vec<Pair<'_, Rule>> = pair.into_inner().collect();
    let operand = inner.pop().expect("unary_expr ends in a postfix");
    let mut e = build_postfix(operand);
    for op in inner.into_iter().rev() {
        let offset = op.as_span().start();
        e = match unary_name(op.as_rule()) {
            Some(name) => GoExpr::Op(name, vec![e], offset),
            None => GoExpr::Unsupported("star expression", offset),
        };
    }
    e
}

fn build_postfix(pair: Pair<'_, Rule>) -> GoExpr {
    let mut inner = pair.into_inner();
    let operand = inner.next().expect("operand");
    let mut e = build_operand(operand);
    for suffix in inner {
        let offset = suffix.as_span().start();
        e = match suffix.as_rule() {
            Rule::selector => {
                let name = suffix
                    .into_inner()
                    .next()
                    .expect("ident")
                    .as_str()
                    .to_owned();
                let start = e.offset();
                GoExpr::Selector(Box::new(e), name, start)
            }
            Rule::call => {
                let args = suffix.into_inner().map(build_expr).collect();
                let start = e.offset();
                GoExpr::Call(Box::new(e), args, start)
            }
            Rule::index => {
                let idx = build_expr(suffix.into_inner().next().expect("index expr"));
                GoExpr::Index(Box::new(e), Box::new(idx), offset)
            }
            Rule::slice => GoExpr::Unsupported("slice expression", offset),
            Rule::type_assert => GoExpr::Unsupported("type assertion", offset),
            Rule::composite => GoExpr::Unsupported("composite literal", e.offset()),
            other => unreachable!("unexpected suffix {other:?}"),
        };
    }
    e
}

fn build_operand(pair: Pair<'_, Rule>) -> GoExpr {
    let offset = pair.as_span().start();
    let text = pair.as_str().to_owned();
    match pair.as_rule() {
        Rule::ident => GoExpr::Ident(text, offset),
        Rule::paren => GoExpr::Paren(Box::new(build_expr(
            pair.into_inner().next().expect("paren expr"),
        ))),
        Rule::int_lit => GoExpr::Lit(LitKind::Int, text, offset),
        Rule::float_lit => GoExpr::Lit(LitKind::Float, text, offset),
        Rule::imaginary_lit => GoExpr::Lit(LitKind::Imaginary, text, offset),
        Rule::string_lit => GoExpr::Lit(LitKind::String, text, offset),
        Rule::raw_string_lit => GoExpr::Lit(LitKind::RawString, text, offset),
        Rule::rune_lit => GoExpr::Lit(LitKind::Rune, text, offset),
        Rule::func_lit => GoExpr::Unsupported("function literal", offset),
        Rule::map_type_lit => GoExpr::Unsupported("composite literal", offset),
        other => unreachable!("unexpected operand {other:?}"),
    }
}

fn unexpected(src: &str, what: &str, offset: usize) -> CompileError {
    let (line, col) = line_col(src, offset);
    CompileError::new(
        CompileErrorKind::Unsupported,
        format!("unexpected expression: {what} at {line}:{col}"),
        src,
        Some(offset),
    )
}

/// Mixer's conversion from Go's tree to CEXL's.
fn convert(e: &GoExpr, src: &str) -> Result<Expr, CompileError> {
    match e {
        GoExpr::Ident(name, offset) => Ok(ident_expr(name, *offset)),
        GoExpr::Lit(kind, text, offset) => literal(*kind, text, *offset, src),
        GoExpr::Paren(inner) => convert(inner, src),
        GoExpr::Selector(..) => match dotted_name(e) {
            Some(name) => Ok(Expr::var(name, e.offset())),
            None => Err(unexpected(src, "selector on a non-attribute", e.offset())),
        },
        GoExpr::Call(fun, args, offset) => {
            let (name, target) = match &**fun {
                GoExpr::Ident(name, _) => (name.clone(), None),
                GoExpr::Selector(anchor, method, _) => {
                    (method.clone(), Some(convert_anchor(anchor, src)?))
                }
                other => {
                    return Err(unexpected(
                        src,
                        "call of something that is not a function name",
                        other.offset(),
                    ));
                }
            };
            let args = args
                .iter()
                .map(|a| convert(a, src))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Expr::call(name, target, args, *offset))
        }
        GoExpr::Index(x, i, _) => {
            let map = convert(x, src)?;
            let key = convert(i, src)?;
            let offset = map.offset;
            Ok(Expr::call("INDEX", None, vec![map, key], offset))
        }
        GoExpr::Op(name, args, offset) => {
            let args = args
                .iter()
                .map(|a| convert(a, src))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Expr::call(*name, None, args, *offset))
        }
        GoExpr::Unsupported(what, offset) => Err(unexpected(src, what, *offset)),
    }
}

/// The receiver of a method call: an attribute path, a call, a literal or a parenthesised
/// expression. An index (`ar["x"].f()`) or any other form is rejected, as in Mixer.
fn convert_anchor(anchor: &GoExpr, src: &str) -> Result<Expr, CompileError> {
    match anchor {
        GoExpr::Ident(..) | GoExpr::Call(..) | GoExpr::Lit(..) | GoExpr::Paren(..) => {
            convert(anchor, src)
        }
        GoExpr::Selector(..) => match dotted_name(anchor) {
            Some(name) => Ok(Expr::var(name, anchor.offset())),
            None => Err(unexpected(
                src,
                "method call on a selector of a non-attribute",
                anchor.offset(),
            )),
        },
        other => Err(unexpected(
            src,
            "method call on an unsupported receiver (parenthesise it)",
            other.offset(),
        )),
    }
}

/// `a.b.c` made only of identifiers, as one flat attribute name.
fn dotted_name(e: &GoExpr) -> Option<String> {
    let mut parts = Vec::new();
    let mut cur = e;
    loop {
        match cur {
            GoExpr::Selector(x, name, _) => {
                parts.push(name.as_str());
                cur = x;
            }
            GoExpr::Ident(name, _) => {
                parts.push(name.as_str());
                break;
            }
            _ => return None,
        }
    }
    parts.reverse();
    Some(parts.join("."))
}

fn ident_expr(name: &str, offset: usize) -> Expr {
    match name.to_lowercase().as_str() {
        "true" => Expr::constant(Literal::Bool(true), name, offset),
        "false" => Expr::constant(Literal::Bool(false), name, offset),
        _ => Expr::var(name, offset),
    }
}

fn literal(kind: LitKind, text: &str, offset: usize, src: &str) -> Result<Expr, CompileError> {
    let bad =
        |msg: String| CompileError::new(CompileErrorKind::Unsupported, msg, src, Some(offset));
    let value = match kind {
        LitKind::Int => {
            // Mixer converts with a base-10 parse: `010` is 10, `0x10` is an error.
            if !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!(
                    "strconv.ParseInt: parsing \"{text}\": invalid syntax"
                )));
            }
            match text.parse::<i64>() {
                Ok(v) => Literal::Int64(v),
                Err(_) => {
                    return Err(bad(format!(
                        "strconv.ParseInt: parsing \"{text}\": value out of range"
                    )));
                }
            }
        }
        LitKind::Float => {
            if text.contains('_') {
                return Err(bad(format!(
                    "strconv.ParseFloat: parsing \"{text}\": invalid syntax"
                )));
            }
            let v: f64 = text.parse().map_err(|_| {
                bad(format!(
                    "strconv.ParseFloat: parsing \"{text}\": invalid syntax"
                ))
            })?;
            if v.is_infinite() {
                return Err(bad(format!(
                    "strconv.ParseFloat: parsing \"{text}\": value out of range"
                )));
            }
            Literal::Double(v)
        }
        LitKind::Imaginary => return Err(bad("invalid syntax".to_owned())),
        LitKind::String | LitKind::RawString | LitKind::Rune => {
            let s = unquote(kind, text).map_err(|msg| {
                let (line, col) = line_col(src, offset);
                CompileError::new(
                    CompileErrorKind::Syntax,
                    parse_error_message(src, line, col, &msg),
                    src,
                    Some(offset),
                )
            })?;
            // A quoted literal that reads as a Go duration is a DURATION constant.
            match golib::duration::parse_duration(&s) {
                Some(nanos) => Literal::Duration(nanos),
                None => Literal::String(s),
            }
        }
    };
    Ok(Expr::constant(value, text, offset))
}

/// Go's unquoting of string, raw-string and rune literals.
fn unquote(kind: LitKind, text: &str) -> Result<String, String> {
    let body = &text[1..text.len() - 1];
    if kind == LitKind::RawString {
        // Go drops carriage returns from raw strings.
        return Ok(body.replace('\r', ""));
    }
    let quote = if kind == LitKind::Rune { '\'' } else { '"' };
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    let mut count = 0;
    while let Some(c) = chars.next() {
        count += 1;
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let e = chars.next().ok_or("escape sequence not terminated")?;
        let simple = match e {
            'a' => Some(0x07u8),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '\'' | '"' if e == quote => Some(e as u8),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        let take = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize, radix: u32| {
            let digits: String = chars.by_ref().take(n).collect();
            if digits.len() != n {
                return Err("escape sequence not terminated".to_owned());
            }
            u32::from_str_radix(&digits, radix)
                .map_err(|_| "illegal character in escape sequence".to_owned())
        };
        match e {
            'x' => {
                let v = take(&mut chars, 2, 16)?;
                push_byte_or_rune(&mut out, v, kind);
            }
            '0'..='7' => {
                let rest = take(&mut chars, 2, 8)?;
                let v = (e as u32 - '0' as u32) * 64 + rest;
                if v > 255 {
                    return Err("octal escape value > 255".to_owned());
                }
                push_byte_or_rune(&mut out, v, kind);
            }
            'u' | 'U' => {
                let v = take(&mut chars, if e == 'u' { 4 } else { 8 }, 16)?;
                let c = char::from_u32(v).ok_or("escape sequence is invalid Unicode code point")?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            _ => return Err("unknown escape sequence".to_owned()),
        }
    }
    if kind == LitKind::Rune && count != 1 {
        return Err("illegal rune literal".to_owned());
    }
    // `\x` and octal escapes can spell bytes that are not UTF-8; such text cannot be an
    // attribute value here, so it is replaced rather than rejected.
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn push_byte_or_rune(out: &mut Vec<u8>, v: u32, kind: LitKind) {
    if kind == LitKind::Rune {
        // In a rune literal, `\xff` is the code point U+00FF.
        let c = char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER);
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    } else {
        out.push(v as u8);
    }
}

/// The `attribute == literal` conjuncts of the top-level `&&` chain (Mixer's
/// `ExtractEQMatches`), used to index rules by the attribute values they require.
pub fn extract_eq_matches(expr: &Expr) -> BTreeMap<String, Literal> {
    let mut out = BTreeMap::new();
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        let ExprKind::Call(call) = &e.kind else {
            continue;
        };
        if call.target.is_some() || call.args.len() != 2 {
            continue;
        }
        match call.name.as_str() {
            "LAND" => stack.extend(call.args.iter()),
            "EQ" => match (&call.args[0].kind, &call.args[1].kind) {
                (ExprKind::Var(name), ExprKind::Const(c))
                | (ExprKind::Const(c), ExprKind::Var(name)) => {
                    out.insert(name.clone(), c.value.clone());
                }
                _ => {}
            },
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn postfix(src: &str) -> String {
        parse(src)
            .map(|e| e.to_string())
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn precedence_matches_go() {
        assert_eq!(postfix("a|b|c"), "OR(OR($a, $b), $c)");
        assert_eq!(postfix("a | b == c"), "EQ(OR($a, $b), $c)");
        assert_eq!(postfix("ai == 1 | 2"), "EQ($ai, OR(1, 2))");
        assert_eq!(postfix("a || b && c"), "LOR($a, LAND($b, $c))");
        assert_eq!(postfix("1 == 1 == true"), "EQ(EQ(1, 1), true)");
        assert_eq!(
            postfix("abc | \"a\" + \"b\""),
            "ADD(OR($abc, \"a\"), \"b\")"
        );
        assert_eq!(postfix("!a"), "NOT($a)");
        assert_eq!(postfix("+abc"), "ADD($abc)");
        assert_eq!(postfix("a * b + c"), "ADD(MUL($a, $b), $c)");
        assert_eq!(postfix("a << b"), "($a, $b)");
        assert_eq!(postfix("a - b - c"), "SUB(SUB($a, $b), $c)");
        assert_eq!(postfix("-a * b"), "MUL(SUB($a), $b)");
        assert_eq!(postfix("!a == b"), "EQ(NOT($a), $b)");
        assert_eq!(postfix("--a"), "SUB(SUB($a))");
        assert_eq!(
            postfix("a || b < c + d * e && f"),
            "LOR($a, LAND(LT($b, ADD($c, MUL($d, $e))), $f))"
        );
        assert_eq!(postfix("a * b == c | d"), "EQ(MUL($a, $b), OR($c, $d))");
    }

    #[test]
    fn methods_and_paths() {
        assert_eq!(postfix("a.b.c(q)"), "$a.b:c($q)");
        assert_eq!(postfix("a.b().c().d()"), "$a:b():c():d()");
        assert_eq!(
            postfix("(ar[\"k\"]).startsWith(\"a\")"),
            "INDEX($ar, \"k\"):startsWith(\"a\")"
        );
        assert_eq!(postfix("TRUE"), "true");
        assert!(postfix("ar[\"x\"].startsWith(\"a\")").contains("unexpected expression"));
        assert!(postfix("c().e.d()").contains("unexpected expression"));
        assert!(postfix("a().b").contains("unexpected expression"));
        assert!(postfix("(abc).x").contains("unexpected expression"));
        assert!(postfix("(f)(x)").contains("unexpected expression"));
        assert!(postfix("a[1:2]").contains("unexpected expression"));
        assert!(postfix("foo{}.bar").contains("unexpected expression"));
        assert!(postfix("map[string]string{}").contains("unexpected expression"));
        assert!(postfix("*a != b").contains("unexpected expression"));
    }

    #[test]
    fn lexical_rules() {
        assert_eq!(parse("010").unwrap().to_string(), "010");
        assert!(matches!(
            parse("010").unwrap().kind,
            ExprKind::Const(ref c) if c.value == Literal::Int64(10)
        ));
        assert!(postfix("0x10").contains("strconv.ParseInt: parsing \"0x10\": invalid syntax"));
        assert!(postfix("9223372036854775808").contains("value out of range"));
        assert_eq!(postfix("1i"), "ERR invalid syntax");
        assert!(postfix("\"ai\n== 1\"").contains("unable to parse"));
        assert!(postfix("ai\n== 1").contains("unable to parse expression"));
        assert_eq!(postfix("ai ==\n1"), "EQ($ai, 1)");
        assert_eq!(postfix("ai == 1 // c"), "EQ($ai, 1)");
        assert_eq!(postfix("ai == 1 /* c */"), "EQ($ai, 1)");
        assert!(postfix("").contains("expected operand, found 'EOF'"));
        assert!(postfix("context.type").contains("unable to parse"));
        assert!(postfix("'ab'").contains("unable to parse"));
        assert!(postfix("\"\\q\"").contains("unable to parse"));
        let d = parse("\"10ms\"").unwrap();
        assert!(
            matches!(d.kind, ExprKind::Const(ref c) if c.value == Literal::Duration(10_000_000))
        );
        let s = parse("`raw\\n`").unwrap();
        assert!(
            matches!(s.kind, ExprKind::Const(ref c) if c.value == Literal::String("raw\\n".into()))
        );
        let r = parse("'\\''").unwrap();
        assert!(matches!(r.kind, ExprKind::Const(ref c) if c.value == Literal::String("'".into())));
    }

    #[test]
    fn hostile_input_is_rejected_not_overflowed() {
        let deep = format!("{}a{}", "(".repeat(10_000), ")".repeat(10_000));
        assert_eq!(parse(&deep).unwrap_err().kind, CompileErrorKind::TooDeep);
        let long = vec!["a"; 5000].join(" || ");
        assert_eq!(parse(&long).unwrap_err().kind, CompileErrorKind::TooDeep);
        let unary = format!("{}a", "!".repeat(5000));
        assert_eq!(parse(&unary).unwrap_err().kind, CompileErrorKind::TooDeep);
    }

    #[test]
    fn eq_matches() {
        let e =
            parse("a.b == 3.14 && \"d\" == c && (r.h[\"abc\"] == \"pqr\" || x == \"y\")").unwrap();
        let m = extract_eq_matches(&e);
        assert_eq!(m.len(), 2);
        assert_eq!(m["c"], Literal::String("d".into()));
    }
}
