//! The route directive a Check answer carries: header edits from the rules that matched,
//! and the direct response (with its headers) of a denial.

use expr_lang::{Bag, Recorder};
use templates::Status;

use crate::config::snapshot::{HeaderOperation, HeaderOperationKind, RoutedRule};

/// One header edit for the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderEdit {
    pub name: String,
    pub value: String,
    pub operation: HeaderOperationKind,
}

/// A response the proxy sends instead of forwarding the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectResponse {
    /// The HTTP status; 0 when the handler left it to the front end, which derives it from
    /// the denial's code.
    pub code: u32,
    pub body: String,
}

/// Header edits and a direct response for the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteDirective {
    pub request_header_operations: Vec<HeaderEdit>,
    pub response_header_operations: Vec<HeaderEdit>,
    pub direct_response: Option<DirectResponse>,
}

impl RouteDirective {
    pub fn is_empty(&self) -> bool {
        self.request_header_operations.is_empty()
            && self.response_header_operations.is_empty()
            && self.direct_response.is_none()
    }
}

/// The directive for a Check whose combined status is `status`: a denial's direct response
/// (if a handler gave one), and, when the Check passes, the header operations of `matched`.
pub(crate) fn directive<B: Bag + ?Sized, R: Recorder>(
    status: &Status,
    matched: &[&RoutedRule],
    bag: &B,
    rec: &mut R,
) -> RouteDirective {
    let mut route = RouteDirective::default();
    if let Some(direct) = &status.direct_response {
        route.direct_response = Some(DirectResponse {
            code: direct.code,
            body: direct.body.clone(),
        });
        for (name, value) in &direct.headers {
            direct_header(&mut route.response_header_operations, name, value);
        }
    }
    if status.is_ok() {
        for routed in matched {
            let rule = &routed.rule;
            apply(
                &rule.request_header_operations,
                &mut route.request_header_operations,
                bag,
                rec,
            );
            apply(
                &rule.response_header_operations,
                &mut route.response_header_operations,
                bag,
                rec,
            );
        }
    }
    route
}

/// A direct response header; `set-cookie` values are separate headers, appended.
fn direct_header(out: &mut Vec<HeaderEdit>, name: &str, value: &str) {
    if name.eq_ignore_ascii_case("set-cookie") {
        for part in value.split(',') {
            out.push(HeaderEdit {
                name: name.to_owned(),
                value: part.to_owned(),
                operation: HeaderOperationKind::Append,
            });
        }
    } else {
        out.push(HeaderEdit {
            name: name.to_owned(),
            value: value.to_owned(),
            operation: HeaderOperationKind::Replace,
        });
    }
}

fn apply<B: Bag + ?Sized, R: Recorder>(
    ops: &[HeaderOperation],
    out: &mut Vec<HeaderEdit>,
    bag: &B,
    rec: &mut R,
) {
    for op in ops {
        if op.operation == HeaderOperationKind::Remove {
            out.push(HeaderEdit {
                name: op.name.clone(),
                value: String::new(),
                operation: op.operation,
            });
            continue;
        }
        for v in &op.values {
            // An empty or failing value suppresses the operation.
            if let Ok(value) = v.evaluate_recorded(bag, rec)
                && let Some(s) = value.as_str()
                && !s.is_empty()
            {
                out.push(HeaderEdit {
                    name: op.name.clone(),
                    value: s.to_owned(),
                    operation: op.operation,
                });
            }
        }
    }
}
