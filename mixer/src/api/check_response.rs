//! A `CheckResponse` written straight from the runtime's answer into one buffer.
//!
//! Building the prost message first cost an allocation per header name and value, per
//! referenced message word (twice: the word list and its index) and per repeated field,
//! all freed once encoded. Here every field is written from the answer as it stands, in
//! one pass: a message's length is written after its body (one byte is left for it, and
//! the body moved in the rarer case it needs more), so the only allocation is the
//! buffer. The bytes are what prost would write for the same message (fields in number
//! order, defaults left out), which `tests` checks against the prost message built field
//! by field.

use std::time::Duration;

use prost::Message;
use templates::{QuotaResult, Status as HandlerStatus};

use crate::attrs::global_word_index;
use crate::config::snapshot::HeaderOperationKind;
use crate::runtime::routes::HeaderEdit;
use crate::runtime::{CheckAnswer, Condition, Precondition, QuotaRequest, Referenced};
use crate::wire::pb::istio::mixer::v1::header_operation::Operation;
use crate::wire::pb::istio::mixer::v1::referenced_attributes::Condition as PbCondition;
use crate::wire::pb::istio::policy::v1beta1::DirectHttpResponse;
use crate::wire::status::{DIRECT_HTTP_RESPONSE_TYPE, http_status_for};

/// The buffer protobuf is written into.
type Out = Vec<u8>;

const VARINT: u32 = 0;
const LEN: u32 = 2;

/// `value` as a protobuf varint in `buf`; returns its length.
fn varint_bytes(mut value: u64, buf: &mut [u8; 10]) -> usize {
    let mut n = 0;
    while value >= 0x80 {
        buf[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    buf[n] = value as u8;
    n + 1
}

fn varint(out: &mut Out, value: u64) {
    let mut buf = [0u8; 10];
    let n = varint_bytes(value, &mut buf);
    out.extend_from_slice(&buf[..n]);
}

fn key(out: &mut Out, field: u32, wire_type: u32) {
    varint(out, u64::from(field << 3 | wire_type));
}

/// An `int32`, `int64`, `uint32` or enum field; negative values take ten bytes, as in
/// protobuf.
fn int_field(out: &mut Out, field: u32, value: i64) {
    if value != 0 {
        key(out, field, VARINT);
        varint(out, value as u64);
    }
}

fn sint32_field(out: &mut Out, field: u32, value: i32) {
    if value != 0 {
        key(out, field, VARINT);
        varint(out, u64::from(((value << 1) ^ (value >> 31)) as u32));
    }
}

/// A `string` or `bytes` field; `always` for an element of a repeated field, which is
/// written even when empty.
fn bytes_field(out: &mut Out, field: u32, value: &[u8], always: bool) {
    if always || !value.is_empty() {
        key(out, field, LEN);
        varint(out, value.len() as u64);
        out.extend_from_slice(value);
    }
}

/// A message field, its body written by `body`.
fn message(out: &mut Out, field: u32, body: &dyn Fn(&mut Out)) {
    key(out, field, LEN);
    let at = out.len();
    // Most bodies are shorter than 128 bytes: their length takes the one byte left.
    out.push(0);
    body(out);
    let len = out.len() - at - 1;
    let mut buf = [0u8; 10];
    let n = varint_bytes(len as u64, &mut buf);
    if n > 1 {
        let end = out.len();
        out.resize(end + n - 1, 0);
        out.copy_within(at + 1..end, at + n);
    }
    out[at..at + n].copy_from_slice(&buf[..n]);
}

/// The encoded `CheckResponse` for `answer` to a request with `global_word_count` that
/// asked for `quotas` (the answers in `answer.quotas` are in the same order).
pub fn encode(
    answer: &CheckAnswer,
    quotas: &[QuotaRequest<'_>],
    global_word_count: u32,
) -> Vec<u8> {
    // About what a decision with this many references takes, so it rarely grows.
    let quota_refs: usize = answer.quotas.iter().map(|q| q.referenced.len()).sum();
    let mut out = Vec::with_capacity(128 + 16 * (answer.referenced.len() + quota_refs));
    write_response(&mut out, answer, quotas, global_word_count);
    out
}

fn write_response(out: &mut Out, answer: &CheckAnswer, quotas: &[QuotaRequest<'_>], gwc: u32) {
    let referenced = Words::of(&answer.referenced, gwc);
    message(out, 2, &|o| {
        write_precondition(o, &answer.precondition, &answer.referenced, &referenced)
    });
    // A map: one entry per name (the request's names are unique), by name; an entry
    // leaves out an empty key.
    for (request, quota) in quotas.iter().zip(&answer.quotas) {
        let words = Words::of(&quota.referenced, gwc);
        message(out, 3, &|o| {
            bytes_field(o, 1, request.name.as_bytes(), false);
            message(o, 2, &|o| {
                write_quota_result(o, &quota.result, &quota.referenced, &words)
            });
        });
    }
}

fn write_precondition(out: &mut Out, p: &Precondition, refs: &Referenced, words: &Words<'_>) {
    message(out, 1, &|o| write_status(o, &p.status));
    message(out, 2, &|o| write_duration(o, p.valid_duration));
    int_field(out, 3, i64::from(p.valid_use_count));
    message(out, 5, &|o| write_referenced(o, refs, words));
    if !p.route.is_empty() {
        message(out, 6, &|o| write_route(o, p));
    }
}

fn write_quota_result(out: &mut Out, q: &QuotaResult, refs: &Referenced, words: &Words<'_>) {
    message(out, 1, &|o| write_duration(o, q.valid_duration));
    int_field(out, 2, q.granted_amount);
    message(out, 5, &|o| write_referenced(o, refs, words));
    message(out, 6, &|o| write_status(o, &q.status));
}

/// A `google.rpc.Status`; a direct HTTP response rides in its details, as Mixer sent it.
fn write_status(out: &mut Out, s: &HandlerStatus) {
    int_field(out, 1, i64::from(s.code));
    bytes_field(out, 2, s.message.as_bytes(), false);
    if let Some(d) = &s.direct_response {
        // A denial's rare extra: built as a message, it keeps the map's encoding simple.
        let value = DirectHttpResponse {
            code: d.code as i32,
            body: d.body.clone(),
            headers: d.headers.clone().into_iter().collect(),
        }
        .encode_to_vec();
        message(out, 3, &|o| {
            bytes_field(o, 1, DIRECT_HTTP_RESPONSE_TYPE.as_bytes(), false);
            bytes_field(o, 2, &value, false);
        });
    }
}

fn write_duration(out: &mut Out, d: Duration) {
    int_field(out, 1, i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    int_field(out, 2, i64::from(d.subsec_nanos()));
}

fn write_referenced(out: &mut Out, refs: &Referenced, words: &Words<'_>) {
    for word in words.iter() {
        bytes_field(out, 1, word.as_bytes(), true);
    }
    for r in refs {
        let name = words.index(r.name);
        let map_key = r.map_key.map_or(0, |k| words.key_index(k));
        let condition = match r.condition {
            Condition::Absence => PbCondition::Absence,
            Condition::Exact => PbCondition::Exact,
        } as i64;
        message(out, 2, &|o| {
            sint32_field(o, 1, name);
            int_field(o, 2, condition);
            sint32_field(o, 4, map_key);
        });
    }
}

fn write_route(out: &mut Out, p: &Precondition) {
    let route = &p.route;
    for edit in &route.request_header_operations {
        message(out, 1, &|o| write_header_op(o, edit));
    }
    for edit in &route.response_header_operations {
        message(out, 2, &|o| write_header_op(o, edit));
    }
    // A handler that gave no HTTP status leaves it to the denial's code.
    if let Some(d) = &route.direct_response {
        let code = match d.code {
            0 => http_status_for(p.status.code),
            code => code,
        };
        int_field(out, 3, i64::from(code));
        bytes_field(out, 4, d.body.as_bytes(), false);
    }
}

fn write_header_op(out: &mut Out, edit: &HeaderEdit) {
    let operation = match edit.operation {
        HeaderOperationKind::Replace => Operation::Replace,
        HeaderOperationKind::Remove => Operation::Remove,
        HeaderOperationKind::Append => Operation::Append,
    } as i64;
    bytes_field(out, 1, edit.name.as_bytes(), false);
    bytes_field(out, 2, edit.value.as_bytes(), false);
    int_field(out, 3, operation);
}

/// Message words kept without allocating up to this many.
const INLINE_WORDS: usize = 32;

/// The message dictionary of one `ReferencedAttributes`, with the Envoy client's encoder
/// rule (`attrs::encode_referenced`): a word is global when it is in the global dictionary
/// below the request's `global_word_count`, and otherwise the next message word in order
/// of first use. A map key that is global word 0 is a message word, since `map_key = 0`
/// reads as "no key".
struct Words<'a> {
    global_word_count: u32,
    inline: [&'a str; INLINE_WORDS],
    len: usize,
    /// The words past `INLINE_WORDS`.
    more: Vec<&'a str>,
}

impl<'a> Words<'a> {
    fn of(refs: &'a Referenced, global_word_count: u32) -> Words<'a> {
        let mut words = Words {
            global_word_count,
            inline: [""; INLINE_WORDS],
            len: 0,
            more: Vec::new(),
        };
        for r in refs {
            if words.global(r.name).is_none() {
                words.add(r.name);
            }
            if let Some(key) = r.map_key
                && !key.is_empty()
                && words.global(key).is_none_or(|i| i == 0)
            {
                words.add(key);
            }
        }
        words
    }

    fn global(&self, word: &str) -> Option<i32> {
        global_word_index(word)
            .filter(|&i| i < self.global_word_count)
            .and_then(|i| i32::try_from(i).ok())
    }

    fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.inline[..self.len]
            .iter()
            .copied()
            .chain(self.more.iter().copied())
    }

    fn position(&self, word: &str) -> Option<usize> {
        self.iter().position(|w| w == word)
    }

    fn add(&mut self, word: &'a str) {
        if self.position(word).is_some() {
            return;
        }
        if self.len < INLINE_WORDS {
            self.inline[self.len] = word;
            self.len += 1;
        } else {
            self.more.push(word);
        }
    }

    /// The index of a word [`Words::of`] saw: global, or `-1 - position`.
    fn message_index(&self, word: &str) -> i32 {
        let slot = self.position(word).unwrap_or(0);
        -i32::try_from(slot).unwrap_or(i32::MAX) - 1
    }

    fn index(&self, word: &str) -> i32 {
        self.global(word)
            .unwrap_or_else(|| self.message_index(word))
    }

    /// A map key's index; 0 (no key) for an empty key.
    fn key_index(&self, key: &str) -> i32 {
        if key.is_empty() {
            return 0;
        }
        match self.global(key) {
            Some(i) if i != 0 => i,
            _ => self.message_index(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use templates::{DirectHttpResponse as HandlerDirect, code};

    use super::*;
    use crate::api::mixer::encode_referenced_attributes;
    use crate::runtime::QuotaAnswer;
    use crate::runtime::routes::{DirectResponse, RouteDirective};
    use crate::wire::pb::google::rpc::Status as RpcStatus;
    use crate::wire::pb::istio::mixer::v1::{
        CheckResponse, HeaderOperation, RouteDirective as PbRoute, check_response,
    };

    /// The response as a prost message, field by field (what the server sent before).
    fn expected(answer: &CheckAnswer, quotas: &[QuotaRequest<'_>], gwc: u32) -> CheckResponse {
        let status = |s: &HandlerStatus| RpcStatus {
            code: s.code,
            message: s.message.clone(),
            details: s
                .direct_response
                .iter()
                .map(|d| prost_types::Any {
                    type_url: DIRECT_HTTP_RESPONSE_TYPE.to_owned(),
                    value: DirectHttpResponse {
                        code: d.code as i32,
                        body: d.body.clone(),
                        headers: d.headers.clone().into_iter().collect(),
                    }
                    .encode_to_vec(),
                })
                .collect(),
        };
        let duration = |d: Duration| prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        };
        let ops = |edits: &[HeaderEdit]| -> Vec<HeaderOperation> {
            edits
                .iter()
                .map(|e| HeaderOperation {
                    name: e.name.clone(),
                    value: e.value.clone(),
                    operation: match e.operation {
                        HeaderOperationKind::Replace => Operation::Replace,
                        HeaderOperationKind::Remove => Operation::Remove,
                        HeaderOperationKind::Append => Operation::Append,
                    } as i32,
                })
                .collect()
        };
        let p = &answer.precondition;
        let route =
            (!p.route.is_empty()).then(|| PbRoute {
                request_header_operations: ops(&p.route.request_header_operations),
                response_header_operations: ops(&p.route.response_header_operations),
                direct_response_code: p.route.direct_response.as_ref().map_or(0, |d| {
                    match d.code {
                        0 => http_status_for(p.status.code),
                        c => c,
                    }
                }),
                direct_response_body: p
                    .route
                    .direct_response
                    .as_ref()
                    .map(|d| d.body.clone())
                    .unwrap_or_default(),
            });
        CheckResponse {
            precondition: Some(check_response::PreconditionResult {
                status: Some(status(&p.status)),
                valid_duration: Some(duration(p.valid_duration)),
                valid_use_count: p.valid_use_count,
                referenced_attributes: Some(encode_referenced_attributes(&answer.referenced, gwc)),
                route_directive: route,
            }),
            quotas: quotas
                .iter()
                .zip(&answer.quotas)
                .map(|(q, a)| {
                    let result = check_response::QuotaResult {
                        valid_duration: Some(duration(a.result.valid_duration)),
                        granted_amount: a.result.granted_amount,
                        referenced_attributes: Some(encode_referenced_attributes(
                            &a.referenced,
                            gwc,
                        )),
                        status: Some(status(&a.result.status)),
                    };
                    (q.name.to_owned(), result)
                })
                .collect(),
        }
    }

    fn referenced(refs: &[(&str, Option<&str>, Condition)]) -> Referenced {
        let mut r = Referenced::new();
        for &(name, key, condition) in refs {
            r.set(name, key, condition);
        }
        r
    }

    fn edit(name: &str, value: &str, operation: HeaderOperationKind) -> HeaderEdit {
        HeaderEdit {
            name: name.to_owned(),
            value: value.to_owned(),
            operation,
        }
    }

    fn assert_same_as_prost(answer: &CheckAnswer, quotas: &[QuotaRequest<'_>]) {
        for gwc in [0, 111, 222] {
            let bytes = encode(answer, quotas, gwc);
            let want = expected(answer, quotas, gwc);
            assert_eq!(bytes, want.encode_to_vec(), "gwc {gwc}: {want:?}");
            assert_eq!(CheckResponse::decode(&bytes[..]).unwrap(), want);
        }
    }

    #[test]
    fn written_responses_are_prosts_bytes() {
        let refs = referenced(&[
            ("source.labels", Some("app"), Condition::Exact),
            ("destination.namespace", None, Condition::Exact),
            ("source.ip", None, Condition::Absence),
            ("x.custom", Some(""), Condition::Exact),
            // `source.ip` is global word 0: as a map key it must be a message word.
            ("request.headers", Some("source.ip"), Condition::Absence),
            ("request.headers", Some("app"), Condition::Exact),
            ("x.custom", None, Condition::Absence),
        ]);
        let ok = CheckAnswer {
            precondition: Precondition {
                status: HandlerStatus::OK,
                valid_duration: Duration::new(60, 5),
                valid_use_count: 10_000,
                route: RouteDirective {
                    request_header_operations: vec![
                        edit("x-mixer-checked", "true", HeaderOperationKind::Replace),
                        edit("x-gone", "", HeaderOperationKind::Remove),
                    ],
                    response_header_operations: vec![edit(
                        "set-cookie",
                        "a=1",
                        HeaderOperationKind::Append,
                    )],
                    direct_response: None,
                },
                denied_by: None,
            },
            referenced: Arc::new(refs.clone()),
            quotas: vec![
                QuotaAnswer {
                    result: QuotaResult {
                        status: HandlerStatus::OK,
                        valid_duration: Duration::from_millis(1500),
                        granted_amount: 3,
                        budget: None,
                    },
                    referenced: referenced(&[("source.ip", None, Condition::Exact)]),
                },
                QuotaAnswer {
                    result: QuotaResult {
                        status: HandlerStatus::new(code::RESOURCE_EXHAUSTED, "over"),
                        valid_duration: Duration::ZERO,
                        granted_amount: 0,
                        budget: None,
                    },
                    referenced: Referenced::new(),
                },
            ],
        };
        let quotas = [
            QuotaRequest {
                name: "",
                amount: 3,
                best_effort: false,
            },
            QuotaRequest {
                name: "requestcount",
                amount: 1,
                best_effort: true,
            },
        ];
        assert_same_as_prost(&ok, &quotas);

        // A denial with a direct response, its code left to the denial, and a large
        // dictionary of message words.
        let many: Vec<String> = (0..40).map(|i| format!("x.attr{i}")).collect();
        let mut refs = Referenced::new();
        for name in &many {
            refs.set(name, Some(name), Condition::Exact);
        }
        let direct = HandlerDirect {
            code: 0,
            body: "denied".to_owned(),
            headers: vec![("location".to_owned(), "/login".to_owned())]
                .into_iter()
                .collect(),
        };
        let denied = CheckAnswer {
            precondition: Precondition {
                status: HandlerStatus {
                    code: code::PERMISSION_DENIED,
                    message: "h:no".to_owned(),
                    direct_response: Some(direct),
                },
                valid_duration: Duration::ZERO,
                valid_use_count: -1,
                route: RouteDirective {
                    request_header_operations: Vec::new(),
                    response_header_operations: Vec::new(),
                    direct_response: Some(DirectResponse {
                        code: 0,
                        body: "denied".to_owned(),
                    }),
                },
                denied_by: Some("r".to_owned()),
            },
            referenced: Arc::new(refs),
            quotas: Vec::new(),
        };
        assert_same_as_prost(&denied, &[]);
    }
}
