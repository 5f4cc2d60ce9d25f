//! Cross-cutting HTTP pieces: request spans, the health endpoint, the body
//! limit of the JSON and form APIs, and reading a bounded request body.

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, Response};
use axum::routing::get;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, OnResponse, TraceLayer};

use crate::SharedState;

/// Maximum request body for the OAuth and FHIR endpoints. Their bodies are
/// forms and small JSON resources; file content never goes through them.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The body limit layer for routers of small JSON or form bodies. A body over
/// the limit makes the `Bytes` extractor fail with 413.
pub fn body_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(MAX_BODY_BYTES)
}

/// Span per request with method and path. The query string is left out
/// because authorization requests and redirects carry codes and state in it.
#[derive(Debug, Clone, Copy)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> tracing::Span {
        tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
        )
    }
}

/// Logs each response once at `info` (5xx at `error`) with status and latency.
#[derive(Debug, Clone, Copy)]
pub struct ResponseLog;

impl<B> OnResponse<B> for ResponseLog {
    fn on_response(self, response: &Response<B>, latency: std::time::Duration, _: &tracing::Span) {
        let status = response.status().as_u16();
        let latency_ms = latency.as_millis() as u64;
        if response.status().is_server_error() {
            tracing::error!(status, latency_ms, "request failed");
        } else {
            tracing::info!(status, latency_ms, "request finished");
        }
    }
}

/// The request-span layer applied to the whole gateway.
pub fn trace_layer()
-> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, RequestSpan, (), ResponseLog> {
    TraceLayer::new_for_http()
        .make_span_with(RequestSpan)
        .on_request(())
        .on_response(ResponseLog)
}

pub fn health_router() -> Router<SharedState> {
    Router::new().route("/health", get(health))
}

async fn health(axum::extract::State(state): axum::extract::State<SharedState>) -> Response<Body> {
    let db = state.db.clone();
    let database_ok = db
        .call(|connection| Ok(connection.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?))
        .await
        .is_ok();

    let (status, body) = if database_ok {
        (200, serde_json::json!({ "status": "ok" }))
    } else {
        tracing::error!("health check: the database did not answer");
        (503, serde_json::json!({ "status": "unavailable", "database": "failed" }))
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Body::from(body.to_string()))
        .expect("static response parts are valid")
}
