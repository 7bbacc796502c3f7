//! Per-request telemetry: a span, and the request metrics by endpoint and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::telemetry::metrics::record_request;

/// The metric label of a route (low cardinality: the route, never the hashes in it).
fn endpoint(method: &axum::http::Method, route: Option<&str>) -> &'static str {
    use axum::http::Method;
    match (method, route.unwrap_or("")) {
        (_, "/v2/reconstructions/{file}") => "reconstruction_v2",
        (_, "/v1/reconstructions/{file}") => "reconstruction_v1",
        (_, "/v1/reconstructions") => "reconstruction_batch",
        (_, "/v1/chunks/{prefix}/{chunk}") => "dedup_query",
        (&Method::HEAD, "/v1/xorbs/{prefix}/{xorb}") => "xorb_head",
        (_, "/v1/xorbs/{prefix}/{xorb}") => "xorb_upload",
        (_, "/v1/shards") => "shard_upload_v1",
        (_, "/v2/shards") => "shard_upload_v2",
        (_, "/v1/files/{file}") => "file_head",
        (_, "/v1/telemetry") => "telemetry",
        (_, "/v1/xorb-grants/{prefix}/{xorb}") => "xorb_grant",
        (_, "/healthz") => "healthz",
        _ => "unmatched",
    }
}

fn content_length(headers: &axum::http::HeaderMap) -> u64 {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Middleware: times the request, records it, and runs it inside a span.
pub async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let name = endpoint(
        req.method(),
        req.extensions().get::<MatchedPath>().map(|p| p.as_str()),
    );
    let bytes_in = content_length(req.headers());
    let span = tracing::info_span!("http", endpoint = name, method = %req.method(), path = %req.uri().path());
    let resp = next.run(req).instrument(span).await;
    let bytes_out = content_length(resp.headers());
    record_request(
        name,
        resp.status().as_str(),
        started.elapsed(),
        bytes_in,
        bytes_out,
    );
    resp
}
