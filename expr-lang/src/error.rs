//! Errors: compile-time (parse, check, code generation) and run-time.

/// Which stage rejected an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompileErrorKind {
    /// The text is not a Go expression (Mixer: `unable to parse expression '<src>': ...`).
    Syntax,
    /// A Go expression form CEXL does not support (`unexpected expression: ...`), or a
    /// literal that cannot be converted (`strconv.ParseInt: ...`, `invalid syntax`).
    Unsupported,
    /// The expression does not type-check against the manifest.
    Type,
    /// It type-checks but no code exists for an operator on that type
    /// (`internal compiler error -- equality for type not yet implemented: duration`).
    Codegen,
    /// The expression exceeds the nesting limit that protects the server's stack.
    TooDeep,
    /// A constant regular expression (the target of `matches`) that does not compile:
    /// bad syntax, or a compiled form over the size limit.
    Regex,
}

impl CompileErrorKind {
    /// Whether this is a parse-stage error (as opposed to a check-stage one).
    pub fn is_parse(self) -> bool {
        matches!(
            self,
            CompileErrorKind::Syntax | CompileErrorKind::Unsupported | CompileErrorKind::TooDeep
        )
    }
}

/// An expression that cannot be compiled. `message` is Mixer's wording; `offset` is the
/// byte offset in `expression` the error is about, when known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    pub kind: CompileErrorKind,
    pub message: String,
    pub expression: String,
    pub offset: Option<usize>,
}

impl CompileError {
    pub(crate) fn new(
        kind: CompileErrorKind,
        message: impl Into<String>,
        source: &str,
        offset: Option<usize>,
    ) -> CompileError {
        CompileError {
            kind,
            message: message.into(),
            expression: source.to_owned(),
            offset,
        }
    }

    /// 1-based (line, column) of the error in the source, counting characters.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        let offset = self.offset?.min(self.expression.len());
        let before = self.expression.get(..offset)?;
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Some((line, column))
    }

    /// The 1-based column of the error, when known.
    pub fn column(&self) -> Option<usize> {
        self.line_column().map(|(_, c)| c)
    }

    /// A message for a person: the error, its column, and the source line with a caret.
    pub fn render(&self) -> String {
        let mut out = self.message.clone();
        if let Some((line_no, column)) = self.line_column() {
            out.push_str(&format!(" (line {line_no}, column {column})\n"));
            let line = self.expression.lines().nth(line_no - 1).unwrap_or("");
            out.push_str("  ");
            out.push_str(line);
            out.push_str("\n  ");
            out.push_str(&" ".repeat(column - 1));
            out.push('^');
        }
        out
    }
}

/// A failure while evaluating a compiled program against a bag. Every variant aborts the
/// whole evaluation; the text is Mixer's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// A declared attribute is absent and no `|` supplied a fallback.
    #[error("lookup failed: '{0}'")]
    LookupFailed(String),
    /// A bag value of the wrong type for its declared attribute type.
    #[error("error converting value to {kind}: '{value}'")]
    Conversion { kind: &'static str, value: String },
    /// A builtin function rejected its input (message as Mixer's externs word it).
    #[error("{0}")]
    Function(String),
}
