//! `denier`: answers every check with a configured status (templates `checknothing`,
//! `listentry`, `quota`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;
use templates::handler::{
    CheckNothingHandler, CheckReply, ListEntryHandler, QuotaHandler, QuotaReply,
};
use templates::instances::{checknothing, listentry, quota};
use templates::{
    CheckResult, DirectHttpResponse, Handler, ParamError, QuotaArgs, QuotaResult, Reply, Status,
    TemplateKind, code,
};

use crate::params::{self, decode, opt_duration};
use crate::{Adapter, BuildError, Env, ValidateInput, Validation};

/// The type URL of a `DirectHttpResponse` detail in a `google.rpc.Status`.
pub const DIRECT_HTTP_RESPONSE_TYPE: &str =
    "type.googleapis.com/istio.policy.v1beta1.DirectHttpResponse";

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    status: Option<StatusParams>,
    #[serde(
        rename = "validDuration",
        alias = "valid_duration",
        default,
        deserialize_with = "opt_duration"
    )]
    valid_duration: Option<Duration>,
    #[serde(rename = "validUseCount", alias = "valid_use_count", default)]
    valid_use_count: Option<i32>,
}

/// A `google.rpc.Status` written in params.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct StatusParams {
    #[serde(default)]
    pub code: Option<Json>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub details: Vec<Json>,
}

impl StatusParams {
    /// The status it describes; `default_code` when no code is given.
    pub fn to_status(&self, field: &str, default_code: i32) -> Result<Status, Vec<ParamError>> {
        let mut errors = Vec::new();
        let code = match &self.code {
            None => default_code,
            Some(Json::Number(n)) => match n.as_i64().and_then(|n| i32::try_from(n).ok()) {
                Some(c) if (0..=16).contains(&c) => c,
                _ => {
                    errors.push(params::error(
                        format!("{field}.code"),
                        format!("{n} is not a google.rpc.Code (0..16)"),
                    ));
                    default_code
                }
            },
            Some(Json::String(s)) => code::parse(s).unwrap_or_else(|| {
                errors.push(params::error(
                    format!("{field}.code"),
                    format!("{s:?} is not a google.rpc.Code name"),
                ));
                default_code
            }),
            Some(other) => {
                errors.push(params::error(
                    format!("{field}.code"),
                    format!("expected a code number or name, found {other}"),
                ));
                default_code
            }
        };
        let mut direct_response = None;
        for (i, d) in self.details.iter().enumerate() {
            match parse_direct_response(d) {
                Ok(r) => {
                    direct_response.get_or_insert(r);
                }
                Err(msg) => errors.push(params::error(format!("{field}.details[{i}]"), msg)),
            }
        }
        if errors.is_empty() {
            Ok(Status {
                code,
                message: self.message.clone(),
                direct_response,
            })
        } else {
            Err(errors)
        }
    }
}

/// Parses a status detail: a protobuf-JSON `Any` holding a `DirectHttpResponse`.
fn parse_direct_response(d: &Json) -> Result<DirectHttpResponse, String> {
    let Json::Object(m) = d else {
        return Err(format!("expected a mapping with \"@type\", found {d}"));
    };
    let ty = m.get("@type").and_then(Json::as_str).unwrap_or("");
    if ty != DIRECT_HTTP_RESPONSE_TYPE {
        return Err(format!(
            "unsupported detail type {ty:?}; only {DIRECT_HTTP_RESPONSE_TYPE} is understood"
        ));
    }
    for k in m.keys() {
        if !matches!(k.as_str(), "@type" | "code" | "body" | "headers") {
            return Err(format!("unknown field {k:?} in DirectHttpResponse"));
        }
    }
    let code = match m.get("code") {
        None | Some(Json::Null) => 0,
        Some(Json::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("invalid HTTP status code {n}"))?,
        Some(Json::String(s)) => http_status_code(s)
            .ok_or_else(|| format!("{s:?} is not an istio.policy.v1beta1.HttpStatusCode name"))?,
        Some(other) => return Err(format!("invalid HTTP status code {other}")),
    };
    let body = match m.get("body") {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(s)) => s.clone(),
        Some(other) => return Err(format!("body must be a string, found {other}")),
    };
    let mut headers = BTreeMap::new();
    match m.get("headers") {
        None | Some(Json::Null) => {}
        Some(Json::Object(h)) => {
            for (k, v) in h {
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("header {k:?} must be a string"))?;
                headers.insert(k.clone(), v.to_owned());
            }
        }
        Some(other) => return Err(format!("headers must be a mapping, found {other}")),
    }
    Ok(DirectHttpResponse {
        code,
        body,
        headers,
    })
}

/// `istio.policy.v1beta1.HttpStatusCode` by name, or a number written as text.
pub fn http_status_code(name: &str) -> Option<u32> {
    const CODES: &[(&str, u32)] = &[
        ("Empty", 0),
        ("Continue", 100),
        ("OK", 200),
        ("Created", 201),
        ("Accepted", 202),
        ("NonAuthoritativeInformation", 203),
        ("NoContent", 204),
        ("ResetContent", 205),
        ("PartialContent", 206),
        ("MultiStatus", 207),
        ("AlreadyReported", 208),
        ("IMUsed", 226),
        ("MultipleChoices", 300),
        ("MovedPermanently", 301),
        ("Found", 302),
        ("SeeOther", 303),
        ("NotModified", 304),
        ("UseProxy", 305),
        ("TemporaryRedirect", 307),
        ("PermanentRedirect", 308),
        ("BadRequest", 400),
        ("Unauthorized", 401),
        ("PaymentRequired", 402),
        ("Forbidden", 403),
        ("NotFound", 404),
        ("MethodNotAllowed", 405),
        ("NotAcceptable", 406),
        ("ProxyAuthenticationRequired", 407),
        ("RequestTimeout", 408),
        ("Conflict", 409),
        ("Gone", 410),
        ("LengthRequired", 411),
        ("PreconditionFailed", 412),
        ("PayloadTooLarge", 413),
        ("URITooLong", 414),
        ("UnsupportedMediaType", 415),
        ("RangeNotSatisfiable", 416),
        ("ExpectationFailed", 417),
        ("MisdirectedRequest", 421),
        ("UnprocessableEntity", 422),
        ("Locked", 423),
        ("FailedDependency", 424),
        ("UpgradeRequired", 426),
        ("PreconditionRequired", 428),
        ("TooManyRequests", 429),
        ("RequestHeaderFieldsTooLarge", 431),
        ("InternalServerError", 500),
        ("NotImplemented", 501),
        ("BadGateway", 502),
        ("ServiceUnavailable", 503),
        ("GatewayTimeout", 504),
        ("HTTPVersionNotSupported", 505),
        ("VariantAlsoNegotiates", 506),
        ("InsufficientStorage", 507),
        ("LoopDetected", 508),
        ("NotExtended", 510),
        ("NetworkAuthenticationRequired", 511),
    ];
    if let Ok(n) = name.trim().parse::<u32>() {
        return Some(n);
    }
    CODES
        .iter()
        .find(|(n, _)| *n == name.trim())
        .map(|(_, c)| *c)
}

/// Validated denier params: the answer to every check.
#[derive(Debug)]
pub struct Config {
    result: CheckResult,
}

/// The denier adapter.
pub struct Denier;

impl Adapter for Denier {
    type Config = Config;

    fn name(&self) -> &'static str {
        "denier"
    }

    fn description(&self) -> &'static str {
        "Rejects any check and quota request with a configurable error"
    }

    fn templates(&self) -> &'static [TemplateKind] {
        &[
            TemplateKind::CheckNothing,
            TemplateKind::ListEntry,
            TemplateKind::Quota,
        ]
    }

    fn validate(&self, input: &ValidateInput<'_>) -> Validation<Config> {
        validate(input).into()
    }

    fn build(&self, config: Config, _env: &Env) -> Result<Arc<dyn Handler>, BuildError> {
        Ok(Arc::new(DenierHandler {
            result: config.result,
        }))
    }
}

/// Validates denier params into the answer they configure.
fn validate(input: &ValidateInput<'_>) -> Result<Config, Vec<ParamError>> {
    let p: Params = decode(input.params)?;
    let status = p
        .status
        .unwrap_or_default()
        .to_status("params.status", code::FAILED_PRECONDITION)?;
    let valid_use_count = p.valid_use_count.unwrap_or(1000);
    if valid_use_count < 0 {
        return Err(vec![params::error(
            "params.validUseCount",
            "must not be negative",
        )]);
    }
    Ok(Config {
        result: CheckResult {
            status,
            valid_duration: p.valid_duration.unwrap_or(Duration::from_secs(5)),
            valid_use_count,
        },
    })
}

struct DenierHandler {
    result: CheckResult,
}

impl CheckNothingHandler for DenierHandler {
    fn handle_check_nothing(&self, _: &checknothing::Instance<'_>) -> CheckReply<'_> {
        Reply::Ready(Ok(self.result.clone()))
    }
}

impl ListEntryHandler for DenierHandler {
    fn handle_list_entry(&self, _: &listentry::Instance<'_>) -> CheckReply<'_> {
        Reply::Ready(Ok(self.result.clone()))
    }
}

impl QuotaHandler for DenierHandler {
    fn handle_quota(&self, _: &quota::Instance<'_>, _: QuotaArgs<'_>) -> QuotaReply<'_> {
        // Mixer's denier answered quota with an empty result: nothing granted.
        Reply::Ready(Ok(QuotaResult {
            status: Status::OK,
            valid_duration: Duration::ZERO,
            granted_amount: 0,
            budget: None,
        }))
    }
}

impl Handler for DenierHandler {
    fn check_nothing(&self) -> Option<&dyn CheckNothingHandler> {
        Some(self)
    }
    fn list_entry(&self) -> Option<&dyn ListEntryHandler> {
        Some(self)
    }
    fn quota(&self) -> Option<&dyn QuotaHandler> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(params: Json) -> Result<Config, Vec<ParamError>> {
        Denier
            .validate(&ValidateInput {
                handler: "denyall.istio-system",
                params: &params,
                instances: &[],
            })
            .config
    }

    fn result(params: Json) -> CheckResult {
        let h = Denier
            .build(validate(params).unwrap(), &Env::standalone("h"))
            .unwrap();
        let inst = checknothing::Instance { name: "i" };
        match h.check_nothing().unwrap().handle_check_nothing(&inst) {
            Reply::Ready(r) => r.unwrap(),
            Reply::Later(_) => panic!("denier answers at once"),
        }
    }

    #[test]
    fn defaults_and_status() {
        let r = result(Json::Null);
        assert_eq!(r.status.code, code::FAILED_PRECONDITION);
        assert_eq!(r.valid_duration, Duration::from_secs(5));
        assert_eq!(r.valid_use_count, 1000);
        let r = result(json!({"status": {"code": 7, "message": "Not allowed"}}));
        assert_eq!(r.status, Status::new(7, "Not allowed"));
        assert_eq!(r.valid_use_count, 1000);
        let r = result(
            json!({"status": {"code": "PERMISSION_DENIED"}, "validDuration": "10s", "valid_use_count": 3}),
        );
        assert_eq!(
            (r.status.code, r.valid_duration, r.valid_use_count),
            (7, Duration::from_secs(10), 3)
        );
    }

    #[test]
    fn direct_http_response_detail() {
        let r = result(json!({"status": {"code": 7, "message": "no", "details": [{
            "@type": DIRECT_HTTP_RESPONSE_TYPE,
            "code": "Forbidden",
            "body": "go away",
            "headers": {"Set-Cookie": "a=1,b=2"}
        }]}}));
        let d = r.status.direct_response.unwrap();
        assert_eq!((d.code, d.body.as_str()), (403, "go away"));
        assert_eq!(d.headers["Set-Cookie"], "a=1,b=2");
    }

    #[test]
    fn bad_params_name_the_field() {
        let e = validate(json!({"status": {"code": 99}})).unwrap_err();
        assert_eq!(e[0].field, "params.status.code");
        let e = validate(json!({"status": {"details": [{"@type": "x"}]}})).unwrap_err();
        assert_eq!(e[0].field, "params.status.details[0]");
        let e = validate(json!({"validDuration": 5})).unwrap_err();
        assert_eq!(e[0].field, "params.validDuration");
        let e = validate(json!({"bogus": true})).unwrap_err();
        assert!(e[0].message.contains("unknown field `bogus`"));
    }
}
