//! The one table of function signatures: intrinsics (operators, `conditional`, `size`) and
//! externs (`match`, `ip`, `timestamp`, ...), plus any custom functions a host registers.
//!
//! Every builtin is an enum value (`Intrinsic`, `Extern`) that knows its name and
//! signature; the table is built from those values, so the checker resolves a call's name to
//! its implementation once and nothing later dispatches on names.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::error::EvalError;
use crate::value::{Value, ValueType};

use ValueType::{
    Bool, DnsName, EmailAddress, Int64, IpAddress, String as Str, StringMap, Timestamp,
    Unspecified as Any, Uri,
};

/// A host-provided implementation of a custom function. It receives the evaluated target
/// (for instance methods) followed by the arguments.
pub type CustomFn =
    Arc<dyn for<'a> Fn(&[Value<'a>]) -> Result<Value<'static>, EvalError> + Send + Sync>;

/// An ordering operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// How Mixer's code generator named the operation in "not yet implemented" errors.
    pub(crate) fn description(self) -> &'static str {
        match self {
            CmpOp::Lt => "less than",
            CmpOp::Le => "less or equal",
            CmpOp::Gt => "greater than",
            CmpOp::Ge => "greater or equal",
        }
    }
}

/// A function built into the compiler: an operator (the parser names `a == b` `EQ(a, b)`,
/// see parse.rs), `conditional` or `size`. Each compiles to its own node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Intrinsic {
    Lor,
    Land,
    Eq,
    Neq,
    Order(CmpOp),
    /// `|`: the first operand that resolves.
    Or,
    Add,
    Index,
    Conditional,
    Size,
}

impl Intrinsic {
    const ALL: [Intrinsic; 13] = [
        Intrinsic::Lor,
        Intrinsic::Land,
        Intrinsic::Eq,
        Intrinsic::Neq,
        Intrinsic::Order(CmpOp::Lt),
        Intrinsic::Order(CmpOp::Le),
        Intrinsic::Order(CmpOp::Gt),
        Intrinsic::Order(CmpOp::Ge),
        Intrinsic::Or,
        Intrinsic::Add,
        Intrinsic::Index,
        Intrinsic::Conditional,
        Intrinsic::Size,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Intrinsic::Lor => "LOR",
            Intrinsic::Land => "LAND",
            Intrinsic::Eq => "EQ",
            Intrinsic::Neq => "NEQ",
            Intrinsic::Order(CmpOp::Lt) => "LT",
            Intrinsic::Order(CmpOp::Le) => "LEQ",
            Intrinsic::Order(CmpOp::Gt) => "GT",
            Intrinsic::Order(CmpOp::Ge) => "GEQ",
            Intrinsic::Or => "OR",
            Intrinsic::Add => "ADD",
            Intrinsic::Index => "INDEX",
            Intrinsic::Conditional => "conditional",
            Intrinsic::Size => "size",
        }
    }

    /// Argument types and return type.
    fn signature(self) -> (&'static [ValueType], ValueType) {
        match self {
            Intrinsic::Eq | Intrinsic::Neq | Intrinsic::Order(_) => (&[Any, Any], Bool),
            Intrinsic::Lor | Intrinsic::Land => (&[Bool, Bool], Bool),
            Intrinsic::Or | Intrinsic::Add => (&[Any, Any], Any),
            Intrinsic::Index => (&[StringMap, Str], Str),
            Intrinsic::Conditional => (&[Bool, Any, Any], Any),
            Intrinsic::Size => (&[Str], Int64),
        }
    }
}

/// A standard function taking two strings to a BOOL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StringTest {
    /// `match(subject, glob)`.
    Match,
    /// `regex.matches(subject)`: the target is the pattern.
    Matches,
    /// `subject.startsWith(prefix)`.
    StartsWith,
    /// `subject.endsWith(suffix)`.
    EndsWith,
}

/// A standard function converting one string to a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conversion {
    Ip,
    Timestamp,
    DnsName,
    Email,
    Uri,
    ToLower,
}

/// A standard extern: a function Mixer implemented outside its code generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Extern {
    Test(StringTest),
    Convert(Conversion),
    ConditionalString,
    EmptyStringMap,
}

impl Extern {
    const ALL: [Extern; 12] = [
        Extern::Test(StringTest::Match),
        Extern::Test(StringTest::Matches),
        Extern::Test(StringTest::StartsWith),
        Extern::Test(StringTest::EndsWith),
        Extern::EmptyStringMap,
        Extern::ConditionalString,
        Extern::Convert(Conversion::Ip),
        Extern::Convert(Conversion::Timestamp),
        Extern::Convert(Conversion::DnsName),
        Extern::Convert(Conversion::Email),
        Extern::Convert(Conversion::Uri),
        Extern::Convert(Conversion::ToLower),
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Extern::Test(StringTest::Match) => "match",
            Extern::Test(StringTest::Matches) => "matches",
            Extern::Test(StringTest::StartsWith) => "startsWith",
            Extern::Test(StringTest::EndsWith) => "endsWith",
            Extern::EmptyStringMap => "emptyStringMap",
            Extern::ConditionalString => "conditionalString",
            Extern::Convert(Conversion::Ip) => "ip",
            Extern::Convert(Conversion::Timestamp) => "timestamp",
            Extern::Convert(Conversion::DnsName) => "dnsName",
            Extern::Convert(Conversion::Email) => "email",
            Extern::Convert(Conversion::Uri) => "uri",
            Extern::Convert(Conversion::ToLower) => "toLower",
        }
    }

    /// Whether it is called as a method, with a STRING target.
    fn instance(self) -> bool {
        matches!(
            self,
            Extern::Test(StringTest::Matches | StringTest::StartsWith | StringTest::EndsWith)
        )
    }

    /// Argument types (after the target, if any) and return type.
    fn signature(self) -> (&'static [ValueType], ValueType) {
        match self {
            Extern::Test(StringTest::Match) => (&[Str, Str], Bool),
            Extern::Test(_) => (&[Str], Bool),
            Extern::EmptyStringMap => (&[], StringMap),
            Extern::ConditionalString => (&[Bool, Str, Str], Str),
            Extern::Convert(c) => (
                &[Str],
                match c {
                    Conversion::Ip => IpAddress,
                    Conversion::Timestamp => Timestamp,
                    Conversion::DnsName => DnsName,
                    Conversion::Email => EmailAddress,
                    Conversion::Uri => Uri,
                    Conversion::ToLower => Str,
                },
            ),
        }
    }
}

/// Which implementation a function name resolves to.
#[derive(Clone)]
pub(crate) enum FunctionImpl {
    /// Built into the compiler (operators, `conditional`, `size`).
    Intrinsic(Intrinsic),
    /// One of the standard externs.
    Extern(Extern),
    /// Registered by the host.
    Custom(CustomFn),
    /// Known to the checker only (signature registered without an implementation).
    SignatureOnly,
}

impl fmt::Debug for FunctionImpl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FunctionImpl::Intrinsic(i) => f.debug_tuple("Intrinsic").field(i).finish(),
            FunctionImpl::Extern(e) => f.debug_tuple("Extern").field(e).finish(),
            FunctionImpl::Custom(_) => f.write_str("Custom"),
            FunctionImpl::SignatureOnly => f.write_str("SignatureOnly"),
        }
    }
}

/// A function's signature. `Unspecified` in any position means generic: the first generic
/// position fixes the type every later generic position must have.
#[derive(Clone, Debug)]
pub struct FunctionMeta {
    pub name: String,
    /// Called as a method (`x.f()`) rather than a function (`f(x)`).
    pub instance: bool,
    pub target_type: ValueType,
    pub arg_types: Vec<ValueType>,
    pub return_type: ValueType,
    pub(crate) implementation: FunctionImpl,
}

impl FunctionMeta {
    fn intrinsic(op: Intrinsic) -> FunctionMeta {
        let (args, ret) = op.signature();
        FunctionMeta {
            name: op.name().to_owned(),
            instance: false,
            target_type: Any,
            arg_types: args.to_vec(),
            return_type: ret,
            implementation: FunctionImpl::Intrinsic(op),
        }
    }

    fn standard_extern(ext: Extern) -> FunctionMeta {
        let (args, ret) = ext.signature();
        let instance = ext.instance();
        FunctionMeta {
            name: ext.name().to_owned(),
            instance,
            target_type: if instance { Str } else { Any },
            arg_types: args.to_vec(),
            return_type: ret,
            implementation: FunctionImpl::Extern(ext),
        }
    }
}

/// Function name → signature.
#[derive(Clone, Debug)]
pub struct FunctionTable {
    functions: HashMap<String, FunctionMeta>,
}

impl Default for FunctionTable {
    fn default() -> Self {
        FunctionTable::standard()
    }
}

impl FunctionTable {
    /// The intrinsics only: the operators, `conditional` and `size`.
    pub fn intrinsics() -> FunctionTable {
        let mut t = FunctionTable {
            functions: HashMap::new(),
        };
        for op in Intrinsic::ALL {
            t.add(FunctionMeta::intrinsic(op));
        }
        t
    }

    /// The intrinsics plus every standard extern: what Mixer configuration is checked with.
    pub fn standard() -> FunctionTable {
        let mut t = FunctionTable::intrinsics();
        for ext in Extern::ALL {
            t.add(FunctionMeta::standard_extern(ext));
        }
        t
    }

    fn add(&mut self, meta: FunctionMeta) {
        self.functions.insert(meta.name.clone(), meta);
    }

    /// Registers (or replaces) a custom function. With `implementation: None` the
    /// function type-checks but evaluating it is an error.
    pub fn register(
        &mut self,
        name: &str,
        instance: bool,
        target_type: ValueType,
        arg_types: Vec<ValueType>,
        return_type: ValueType,
        implementation: Option<CustomFn>,
    ) {
        // Re-registering an intrinsic name only changes its signature; its code stays.
        let implementation = match (self.functions.get(name), implementation) {
            (
                Some(FunctionMeta {
                    implementation: FunctionImpl::Intrinsic(op),
                    ..
                }),
                None,
            ) => FunctionImpl::Intrinsic(*op),
            (_, Some(f)) => FunctionImpl::Custom(f),
            (_, None) => FunctionImpl::SignatureOnly,
        };
        self.add(FunctionMeta {
            name: name.to_owned(),
            instance,
            target_type,
            arg_types,
            return_type,
            implementation,
        });
    }

    /// The signature registered under `name`.
    pub fn get(&self, name: &str) -> Option<&FunctionMeta> {
        self.functions.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_found_under_its_own_name() {
        let t = FunctionTable::standard();
        assert_eq!(t.functions.len(), Intrinsic::ALL.len() + Extern::ALL.len());
        for op in Intrinsic::ALL {
            let meta = t.get(op.name()).expect("registered");
            assert!(matches!(meta.implementation, FunctionImpl::Intrinsic(o) if o == op));
        }
        for ext in Extern::ALL {
            let meta = t.get(ext.name()).expect("registered");
            assert!(matches!(meta.implementation, FunctionImpl::Extern(e) if e == ext));
        }
    }
}
