//! The one table of function signatures: intrinsics (operators, `conditional`, `size`) and
//! externs (`match`, `ip`, `timestamp`, ...), plus any custom functions a host registers.

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

/// Which implementation a function name resolves to.
#[derive(Clone)]
pub enum FunctionImpl {
    /// Built into the compiler (operators, `conditional`, `size`).
    Intrinsic,
    /// One of the standard externs, by name.
    Extern,
    /// Registered by the host.
    Custom(CustomFn),
    /// Known to the checker only (signature registered without an implementation).
    SignatureOnly,
}

impl fmt::Debug for FunctionImpl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FunctionImpl::Intrinsic => "Intrinsic",
            FunctionImpl::Extern => "Extern",
            FunctionImpl::Custom(_) => "Custom",
            FunctionImpl::SignatureOnly => "SignatureOnly",
        })
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
    pub implementation: FunctionImpl,
}

impl FunctionMeta {
    fn builtin(
        name: &str,
        instance: bool,
        target_type: ValueType,
        arg_types: &[ValueType],
        return_type: ValueType,
        implementation: FunctionImpl,
    ) -> FunctionMeta {
        FunctionMeta {
            name: name.to_owned(),
            instance,
            target_type,
            arg_types: arg_types.to_vec(),
            return_type,
            implementation,
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
        let i = FunctionImpl::Intrinsic;
        for name in ["EQ", "NEQ", "LT", "LEQ", "GT", "GEQ"] {
            t.add(FunctionMeta::builtin(
                name,
                false,
                Any,
                &[Any, Any],
                Bool,
                i.clone(),
            ));
        }
        for name in ["LOR", "LAND"] {
            t.add(FunctionMeta::builtin(
                name,
                false,
                Any,
                &[Bool, Bool],
                Bool,
                i.clone(),
            ));
        }
        t.add(FunctionMeta::builtin(
            "OR",
            false,
            Any,
            &[Any, Any],
            Any,
            i.clone(),
        ));
        t.add(FunctionMeta::builtin(
            "ADD",
            false,
            Any,
            &[Any, Any],
            Any,
            i.clone(),
        ));
        t.add(FunctionMeta::builtin(
            "INDEX",
            false,
            Any,
            &[StringMap, Str],
            Str,
            i.clone(),
        ));
        t.add(FunctionMeta::builtin(
            "conditional",
            false,
            Any,
            &[Bool, Any, Any],
            Any,
            i.clone(),
        ));
        t.add(FunctionMeta::builtin("size", false, Any, &[Str], Int64, i));
        t
    }

    /// The intrinsics plus every standard extern: what Mixer configuration is checked with.
    pub fn standard() -> FunctionTable {
        let mut t = FunctionTable::intrinsics();
        let e = FunctionImpl::Extern;
        let f = |name: &str, args: &[ValueType], ret: ValueType| {
            FunctionMeta::builtin(name, false, Any, args, ret, FunctionImpl::Extern)
        };
        t.add(f("match", &[Str, Str], Bool));
        t.add(FunctionMeta::builtin(
            "matches",
            true,
            Str,
            &[Str],
            Bool,
            e.clone(),
        ));
        t.add(FunctionMeta::builtin(
            "startsWith",
            true,
            Str,
            &[Str],
            Bool,
            e.clone(),
        ));
        t.add(FunctionMeta::builtin(
            "endsWith",
            true,
            Str,
            &[Str],
            Bool,
            e,
        ));
        t.add(f("emptyStringMap", &[], StringMap));
        t.add(f("conditionalString", &[Bool, Str, Str], Str));
        t.add(f("ip", &[Str], IpAddress));
        t.add(f("timestamp", &[Str], Timestamp));
        t.add(f("dnsName", &[Str], DnsName));
        t.add(f("email", &[Str], EmailAddress));
        t.add(f("uri", &[Str], Uri));
        t.add(f("toLower", &[Str], Str));
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
            (Some(existing), None)
                if matches!(existing.implementation, FunctionImpl::Intrinsic) =>
            {
                FunctionImpl::Intrinsic
            }
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

    pub fn get(&self, name: &str) -> Option<&FunctionMeta> {
        self.functions.get(name)
    }
}
