//! Problems found in configuration, each naming the file, line, resource and field.

use std::fmt;
use std::path::PathBuf;

use templates::ParamError;

use super::store::{Document, Origin};

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The configuration is invalid.
    Error,
    /// Something is skipped or ignored, as Mixer would have; the rest works.
    Warning,
}

/// One problem found while reading or compiling configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    /// `kind/namespace/name`.
    pub resource: Option<String>,
    /// Path of the field within the resource's spec.
    pub field: Option<String>,
    pub message: String,
    /// Where the resource came from when it is not a file: `kubernetes KIND/NS/NAME
    /// (resourceVersion N)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            f.write_str(": ")?;
        } else if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        write!(f, "{sev}: ")?;
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A resource being compiled: its document and its resolved namespace.
pub(crate) struct Res<'d> {
    pub doc: &'d Document,
    pub namespace: String,
}

impl Res<'_> {
    /// `kind/namespace/name`, as diagnostics name resources.
    pub fn ident(&self) -> String {
        format!("{}/{}/{}", self.doc.kind, self.namespace, self.doc.name)
    }

    /// `name.kind.namespace`, as rules refer to resources.
    pub fn fqn(&self) -> String {
        format!("{}.{}.{}", self.doc.name, self.doc.kind, self.namespace)
    }
}

/// The diagnostics of one compile, in the order found.
#[derive(Default)]
pub(crate) struct Diags {
    pub list: Vec<Diagnostic>,
}

impl Diags {
    pub fn push(
        &mut self,
        severity: Severity,
        res: Option<&Res<'_>>,
        doc: Option<&Document>,
        field: Option<String>,
        message: String,
    ) {
        let doc = res.map(|r| r.doc).or(doc);
        let from_file = doc.filter(|d| d.origin == Origin::File);
        self.list.push(Diagnostic {
            severity,
            file: from_file.map(|d| d.file.clone()),
            line: from_file.map(|d| d.line),
            resource: res.map(Res::ident),
            field,
            message,
            origin: doc
                .filter(|d| d.origin != Origin::File)
                .map(Document::location),
        });
    }

    pub fn error(&mut self, res: &Res<'_>, field: Option<&str>, message: impl Into<String>) {
        self.push(
            Severity::Error,
            Some(res),
            None,
            field.map(str::to_owned),
            message.into(),
        );
    }

    pub fn warning(&mut self, res: &Res<'_>, field: Option<&str>, message: impl Into<String>) {
        self.push(
            Severity::Warning,
            Some(res),
            None,
            field.map(str::to_owned),
            message.into(),
        );
    }

    /// A warning about the configuration as a whole.
    pub fn global_warning(&mut self, message: impl Into<String>) {
        self.push(Severity::Warning, None, None, None, message.into());
    }

    pub fn param_errors(&mut self, res: &Res<'_>, prefix: &str, errors: Vec<ParamError>) {
        for e in errors {
            let field = if prefix.is_empty() {
                e.field.clone()
            } else {
                format!("{prefix}.{}", e.field)
            };
            let mut message = e.message.clone();
            if let Some(expr) = &e.expression {
                message.push_str(&format!(" (in expression '{expr}'"));
                if let Some(col) = e.column {
                    message.push_str(&format!(" at column {col}"));
                }
                message.push(')');
            }
            self.push(Severity::Error, Some(res), None, Some(field), message);
        }
    }

    /// An expression that did not compile, with the column where it went wrong.
    pub fn expression_error(
        &mut self,
        res: &Res<'_>,
        field: &str,
        text: &str,
        error: &expr_lang::CompileError,
    ) {
        let col = error
            .column()
            .map(|c| format!(" at column {c}"))
            .unwrap_or_default();
        self.error(
            res,
            Some(field),
            format!("{} (in expression '{text}'{col})", error.message),
        );
    }
}
