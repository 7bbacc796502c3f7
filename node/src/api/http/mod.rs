//! The Xet CAS HTTP API (see `XET.md`), served with axum.
//!
//! Routes (hashes in the Xet hex form; scopes in brackets):
//! - `GET /v2/reconstructions/{file}`, `GET /v1/reconstructions/{file}` [read]: how to
//!   rebuild a file, honouring `Range: bytes=S-E`;
//! - `GET /v1/reconstructions?file_id=…` [read]: several files at once;
//! - `GET /v1/chunks/{default|default-merkledb}/{chunk}` [read]: the global-dedup query;
//! - `POST /v1/xorbs/default/{xorb}` [write], `HEAD /v1/xorbs/default/{xorb}` [read];
//! - `POST /v1/shards` [write] (JSON result), `POST /v2/shards` [write] (NDJSON progress);
//! - `HEAD /v1/files/{file}` [read]; `POST /v1/telemetry` [read];
//! - `POST /v1/xorb-grants/…` answers 404 `grants_unavailable`: clients upload directly;
//! - `GET /healthz` (no auth): 200 when the node can serve.
//!
//! Every error is JSON `{"error": {"code": "<stable code>", "message": "<for people>"}}`
//! with the status the service error maps to.

mod error;
mod handlers;
mod observe;
mod types;

pub use error::ApiError;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, head, post};

use crate::auth::Tokens;
use crate::service::CasService;

/// What every handler needs.
#[derive(Clone)]
pub struct HttpState {
    /// The service the handlers call.
    pub service: CasService,
    /// Verifies bearer tokens.
    pub tokens: Tokens,
}

/// The router of the Xet HTTP API.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route(
            "/v2/reconstructions/{file}",
            get(handlers::reconstruction_v2),
        )
        .route(
            "/v1/reconstructions/{file}",
            get(handlers::reconstruction_v1),
        )
        .route("/v1/reconstructions", get(handlers::reconstructions_batch))
        .route("/v1/chunks/{prefix}/{chunk}", get(handlers::dedup_query))
        .route(
            "/v1/xorbs/{prefix}/{xorb}",
            post(handlers::upload_xorb).head(handlers::head_xorb),
        )
        .route("/v1/shards", post(handlers::upload_shard_v1))
        .route("/v2/shards", post(handlers::upload_shard_v2))
        .route("/v1/files/{file}", head(handlers::head_file))
        .route("/v1/telemetry", post(handlers::telemetry))
        .route("/v1/xorb-grants/{prefix}/{xorb}", post(handlers::no_grants))
        .route("/healthz", get(handlers::healthz))
        .fallback(handlers::not_found)
        // Upload handlers read their bodies with the service's own limits.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(state)
}
