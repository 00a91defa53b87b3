//! Phase 7: rules with their built handlers, and the routing tables of each variety.

use std::sync::Arc;

use expr_lang::{ExprId, PlanBuilder};
use templates::Variety;

use super::handlers::Built;
use super::rules::PendingRule;
use crate::config::snapshot::{Action, Destination, RoutedRule, Routes, Rule};

/// The rules and the routes of each variety.
#[derive(Default)]
pub(super) struct Routed {
    pub rules: Vec<Arc<Rule>>,
    pub check: Routes,
    pub report: Routes,
    pub quota: Routes,
    pub generate: Routes,
}

/// Routes the rules; the `match` of each rule with Report instances joins `plan`.
pub(super) fn route(
    rules: Vec<PendingRule<'_>>,
    built: &Built,
    default_namespace: &str,
    plan: &mut PlanBuilder,
) -> Routed {
    let mut routed = Routed::default();
    for pending in rules {
        let rule = Arc::new(finish(pending, built, plan));
        for (variety, routes) in [
            (Variety::Check, &mut routed.check),
            (Variety::Report, &mut routed.report),
            (Variety::Quota, &mut routed.quota),
            (Variety::AttributeGenerator, &mut routed.generate),
        ] {
            if let Some(r) = for_variety(&rule, variety) {
                add(routes, r, default_namespace);
            }
        }
        routed.rules.push(rule);
    }
    routed
}

/// The rule with the actions whose handler was built (the others were reported).
fn finish(pending: PendingRule<'_>, built: &Built, plan: &mut PlanBuilder) -> Rule {
    let actions: Vec<Action> = pending
        .actions
        .into_iter()
        .filter_map(|a| {
            built.by_fqn.get(&a.handler_fqn).map(|h| Action {
                handler: h.clone(),
                instances: a.instances,
            })
        })
        .collect();
    let reports = actions
        .iter()
        .flat_map(|a| &a.instances)
        .any(|i| i.kind().variety() == Variety::Report);
    let predicate_id = match &pending.predicate {
        Some(p) if reports => plan.intern(p),
        _ => ExprId::NONE,
    };
    Rule {
        name: pending.res.fqn(),
        namespace: pending.res.namespace.clone(),
        predicate: pending.predicate,
        predicate_id,
        actions,
        request_header_operations: pending.request_ops,
        response_header_operations: pending.response_ops,
    }
}

/// The rule as `variety` sees it, or `None` when it does nothing for that variety.
fn for_variety(rule: &Arc<Rule>, variety: Variety) -> Option<RoutedRule> {
    let destinations: Vec<Destination> = rule
        .actions
        .iter()
        .filter_map(|a| {
            let instances: Vec<_> = a
                .instances
                .iter()
                .filter(|i| i.kind().variety() == variety)
                .cloned()
                .collect();
            (!instances.is_empty()).then(|| Destination {
                handler: a.handler.clone(),
                instances,
            })
        })
        .collect();
    let has_header_ops = variety == Variety::Check
        && (!rule.request_header_operations.is_empty()
            || !rule.response_header_operations.is_empty());
    (!destinations.is_empty() || has_header_ops).then(|| RoutedRule {
        rule: rule.clone(),
        destinations,
    })
}

/// Rules of the default namespace apply to every request; others to their namespace's.
fn add(routes: &mut Routes, routed: RoutedRule, default_namespace: &str) {
    if routed.rule.namespace == default_namespace {
        routes.default.push(routed);
    } else {
        routes
            .by_namespace
            .entry(routed.rule.namespace.clone())
            .or_default()
            .push(routed);
    }
}
