//! Request figures for `/metrics` (the node renders them with its own): how many requests each
//! route answered with each status, and how long they took. Routes are named by their
//! template (`/v1/databases/{databaseId}`), never by the ids in them, so the series stay few.

use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The route a request matched, carried out on its response for `record` (which runs outside
/// routing, where the request's own extensions are no longer seen).
#[derive(Clone)]
struct Route(MatchedPath);

/// Inside routing: tags the response with the route that answered.
pub(crate) async fn tag(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let mut res = next.run(req).await;
    if let Some(r) = route {
        res.extensions_mut().insert(Route(r));
    }
    res
}

/// Outside every other layer: counts the request and times it, by method, route and status.
pub(crate) async fn record(req: Request, next: Next) -> Response {
    // Any token is a method to hyper: unknown ones share one series.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    let route = res
        .extensions()
        .get::<Route>()
        .map_or("unmatched", |r| r.0.as_str())
        .to_string();
    let status = res.status().as_u16().to_string();
    metrics::histogram!(
        "basalt_http_request_duration_seconds",
        "method" => method.clone(), "route" => route.clone()
    )
    .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        "basalt_http_requests_total",
        "method" => method, "route" => route, "status" => status
    )
    .increment(1);
    res
}

/// `GET /metrics`: every figure of this node, in Prometheus's text format (no credentials,
/// as scrapers expect: no figure names a user, a key or an id).
pub(crate) async fn metrics(State(s): State<AppState>) -> Response {
    metrics::gauge!("basalt_realtime_connections").set(s.realtime.connections() as f64);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.backend.metrics_text(),
    )
        .into_response()
}
