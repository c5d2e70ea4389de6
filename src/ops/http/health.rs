//! `GET /healthz` (the process answers), `GET /readyz` (Redis subscribed and caught up, every
//! configured link's worker running and none stuck (see [`crate::ops::notify::Part`]), not
//! shutting down: 200, else 503 with the reasons, both
//! as JSON) and
//! `GET /metrics` (Prometheus text format).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::{AppState, WorkerState};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (ready, body) = readiness(&state);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Whether the daemon is ready, and the JSON that says why (not).
fn readiness(state: &AppState) -> (bool, Value) {
    let mut reasons = Vec::new();
    if state.stopping.is_cancelled() {
        reasons.push("shutting down".to_owned());
    }
    let subscription = match state.health.check_data_path() {
        Ok(()) if state.health.is_caught_up() => "ok".to_owned(),
        Ok(()) => {
            reasons.push("catching up from history after subscribing".to_owned());
            "catching up".to_owned()
        }
        Err(why) => {
            reasons.push(why.to_string());
            why.to_string()
        }
    };
    let mut links = Map::new();
    for (link, worker) in state.workers.snapshot() {
        if worker != WorkerState::Running {
            reasons.push(format!("link {link}: delivery worker {}", worker.as_str()));
        }
        links.insert(link, Value::from(worker.as_str()));
    }
    // A worker part busy without progress beyond its bound: what stops the watchdog's pings.
    for stuck in state.health.stuck_workers() {
        reasons.push(stuck.to_string());
    }
    let ready = reasons.is_empty();
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "reasons": reasons,
        "subscription": subscription,
        "workers": links,
    });
    (ready, body)
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}
