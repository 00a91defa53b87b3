//! The monitoring HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `/version`,
//! `/debug/config`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::runtime::Runtime;

/// The monitoring routes.
pub fn router(runtime: Arc<Runtime>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .route("/debug/config", get(debug_config))
        .with_state(runtime)
}

async fn metrics(State(rt): State<Arc<Runtime>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        rt.metrics.render_with(&rt.options.resources.metrics),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(rt): State<Arc<Runtime>>) -> impl IntoResponse {
    if rt.is_ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", rt.not_ready_reason()),
        )
    }
}

async fn version() -> String {
    format!("mixer {}\n", env!("CARGO_PKG_VERSION"))
}

async fn debug_config(State(rt): State<Arc<Runtime>>) -> impl IntoResponse {
    let snap = rt.snapshot();
    let rules: Vec<_> = snap
        .rules
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "namespace": r.namespace,
                "match": r.predicate.as_ref().map(|p| p.source()).unwrap_or("true"),
                "actions": r.actions.iter().map(|a| json!({
                    "handler": a.handler.name,
                    "instances": a.instances.iter().map(|i| i.name()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "request_header_operations": r.request_header_operations.len(),
                "response_header_operations": r.response_header_operations.len(),
            })
        })
        .collect();
    let handlers: Vec<_> = snap
        .handlers
        .values()
        .map(|h| json!({"name": h.name, "adapter": h.adapter}))
        .collect();
    let instances: Vec<_> = snap
        .instances
        .values()
        .map(|i| json!({"name": i.name(), "template": i.kind().name()}))
        .collect();
    let quota_bindings: Vec<_> = snap
        .quota_bindings
        .iter()
        .map(|b| {
            json!({
                "name": b.name,
                "services": b.services.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "specs": b.specs.iter().map(|s| json!({
                    "name": s.name,
                    "rules": s.rules.iter().map(|r| json!({
                        "matches": r.matches.len(),
                        "quotas": r.quotas.iter().map(|q| json!({"quota": q.quota, "charge": q.charge})).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let body = json!({
        "generation": snap.generation,
        "default_namespace": snap.default_namespace,
        "config_dirs": rt.options.config_dirs,
        "kubernetes": rt.kubernetes().map(|k| k.status()),
        "summary": snap.summary,
        "rules": rules,
        "handlers": handlers,
        "instances": instances,
        "quota_bindings": quota_bindings,
        "last_load": rt.last_load(),
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )
}
