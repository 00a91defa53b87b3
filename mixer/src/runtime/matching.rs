//! What every variety does first: find the identity namespace, then the rules whose
//! `match` holds; and counting each handler call.

use std::borrow::Cow;

use expr_lang::{AttrKey, Bag, BagEval, EvalError, Recorder, Value, ValueType};
use templates::TemplateKind;

use super::failures::{Stage, policy_error};
use crate::config::snapshot::{HandlerEntry, Rule, Snapshot};
use crate::metrics::Metrics;

fn key<'s>(snap: &'s Snapshot, name: &'s str) -> (AttrKey<'s>, ValueType) {
    match snap.manifest.get(name) {
        Some(info) => (AttrKey { name, id: info.id }, info.value_type),
        None => (
            AttrKey {
                name,
                id: AttrKey::NO_ID,
            },
            ValueType::String,
        ),
    }
}

/// Reads a string attribute, recording the read.
fn read_string<'b, B: Bag + ?Sized, R: Recorder>(
    snap: &Snapshot,
    bag: &'b B,
    rec: &mut R,
    name: &str,
) -> Option<Cow<'b, str>> {
    let (k, ty) = key(snap, name);
    let v = bag.get(k);
    rec.attribute(name, ty, v.is_some());
    match v? {
        Value::String(s) | Value::DnsName(s) | Value::Uri(s) | Value::EmailAddress(s) => Some(s),
        _ => None,
    }
}

/// The namespace whose rules apply, besides the default namespace's:
/// `destination.namespace` for inbound (or unset) reporters, `source.namespace` for
/// outbound ones.
pub fn identity_namespace<'b, B: Bag + ?Sized, R: Recorder>(
    snap: &Snapshot,
    bag: &'b B,
    rec: &mut R,
) -> Cow<'b, str> {
    let kind = read_string(snap, bag, rec, "context.reporter.kind");
    let attr = match kind.as_deref() {
        None | Some("inbound") => "destination.namespace",
        Some("outbound") => "source.namespace",
        Some(_) => return Cow::Borrowed(""),
    };
    read_string(snap, bag, rec, attr).unwrap_or(Cow::Borrowed(""))
}

/// Whether `rule` applies to the bag. A `match` that cannot be evaluated is counted and
/// logged here; what it means for the request is the variety's decision.
pub(crate) fn rule_matches<B: Bag + ?Sized, R: Recorder>(
    rule: &Rule,
    bag: &B,
    rec: &mut R,
    metrics: &Metrics,
    api: &str,
) -> Result<bool, EvalError> {
    let Some(predicate) = &rule.predicate else {
        return Ok(true);
    };
    predicate
        .evaluate_bool_recorded(bag, rec)
        .inspect_err(|e| policy_error(metrics, &rule.name, Stage::Match, api, e))
}

/// As [`rule_matches`], through the snapshot's Report plan: a `match` shared by several
/// rules is evaluated once per bag (and fails, counted, for each rule).
pub(crate) fn rule_matches_planned<'a, B: Bag + ?Sized>(
    rule: &'a Rule,
    eval: &mut BagEval<'_, 'a, B>,
    metrics: &Metrics,
    api: &str,
) -> Result<bool, EvalError> {
    let Some(predicate) = &rule.predicate else {
        return Ok(true);
    };
    eval.evaluate_bool(rule.predicate_id, predicate)
        .inspect_err(|e| policy_error(metrics, &rule.name, Stage::Match, api, e))
}

/// Counts a handler call in `mixer_runtime_dispatches_total`.
pub(crate) fn count_dispatch(
    metrics: &Metrics,
    template: TemplateKind,
    handler: &HandlerEntry,
    failed: bool,
) {
    handler
        .dispatch_counters
        .get(template, failed, || {
            metrics.dispatches.with_label_values(&[
                template.name(),
                handler.name.as_str(),
                handler.adapter,
                if failed { "true" } else { "false" },
            ])
        })
        .inc();
}
