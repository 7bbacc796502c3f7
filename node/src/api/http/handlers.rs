//! The route handlers: authenticate, decode, call the service, encode.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use super::types::{BatchReconstruction, ReconstructionV1, ReconstructionV2, fetch_info_v1, terms};
use super::{ApiError, HttpState};
use crate::auth::Scope;
use crate::service::{ByteRange, Caller, ServiceError, ShardProgress, parse_hash};

/// Verifies the bearer token for `scope` and names the caller.
fn authorize(state: &HttpState, headers: &HeaderMap, scope: Scope) -> Result<Caller, ApiError> {
    let value = headers
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let claims = state
        .tokens
        .authorize(value, scope)
        .map_err(ServiceError::from)?;
    Ok(Caller {
        subject: claims.sub,
    })
}

/// Request bodies up to this size are read and dropped when a request is refused
/// before its body is used, so the client sees the answer instead of a reset
/// connection; larger ones are not read (the connection closes after the answer).
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// The request's `Content-Length`, if it has a valid one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Drains (up to [`DRAIN_LIMIT`]) a body that will not be used.
async fn drain(body: Body, headers: &HeaderMap) {
    if declared_length(headers).is_some_and(|n| n <= DRAIN_LIMIT as u64) {
        let _ = axum::body::to_bytes(body, DRAIN_LIMIT).await;
    }
}

/// [`authorize`] for a request with a body: a refused request's (small) body is drained.
async fn authorize_upload(
    state: &HttpState,
    headers: &HeaderMap,
    scope: Scope,
    body: Body,
) -> Result<(Caller, Body), ApiError> {
    match authorize(state, headers, scope) {
        Ok(caller) => Ok((caller, body)),
        Err(e) => {
            drain(body, headers).await;
            Err(e)
        }
    }
}

/// The only xorb namespace the protocol uses.
fn check_xorb_prefix(prefix: &str) -> Result<(), ApiError> {
    if prefix == "default" {
        Ok(())
    } else {
        Err(ServiceError::bad_request(
            "unknown_prefix",
            format!("unknown xorb prefix {prefix:?} (expected \"default\")"),
        )
        .into())
    }
}

/// Parses `Range: bytes=S-E` or `bytes=S-` (one range; inclusive end).
fn byte_range(headers: &HeaderMap) -> Result<Option<ByteRange>, ApiError> {
    let Some(value) = headers.get(RANGE) else {
        return Ok(None);
    };
    let bad = || {
        ServiceError::bad_request(
            "bad_range",
            "Range must be one range of the form bytes=START-END or bytes=START-",
        )
    };
    let text = value.to_str().map_err(|_| bad())?.trim();
    let spec = text.strip_prefix("bytes=").ok_or_else(bad)?;
    let (s, e) = spec.split_once('-').ok_or_else(bad)?;
    let start: u64 = s.trim().parse().map_err(|_| bad())?;
    let end: u64 = match e.trim() {
        "" => u64::MAX,
        e => e.parse().map_err(|_| bad())?,
    };
    if end < start {
        return Err(bad().into());
    }
    Ok(Some(ByteRange { start, end }))
}

/// Reads a whole request body of at most `limit` bytes.
async fn read_body(
    body: Body,
    what: &'static str,
    limit: u64,
    headers: &HeaderMap,
) -> Result<Bytes, ApiError> {
    if let Some(len) = declared_length(headers)
        && len > limit
    {
        return Err(ServiceError::TooLarge { what, len, limit }.into());
    }
    let max = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ServiceError::TooLarge {
                what,
                len: limit.saturating_add(1),
                limit,
            }
            .into()
        } else {
            ServiceError::body_read_failed(e).into()
        }
    })
}

/// The request half shared by both reconstruction versions: read scope, the file
/// hash from the path, the optional `Range`.
async fn reconstruct(
    state: &HttpState,
    file: &str,
    headers: &HeaderMap,
) -> Result<crate::service::Reconstruction, ApiError> {
    authorize(state, headers, Scope::Read)?;
    let file = parse_hash(file)?;
    Ok(state
        .service
        .reconstruction(&file, byte_range(headers)?)
        .await?)
}

/// `GET /v2/reconstructions/{file}`.
pub async fn reconstruction_v2(
    State(state): State<HttpState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ReconstructionV2>, ApiError> {
    Ok(Json(ReconstructionV2::from(
        &reconstruct(&state, &file, &headers).await?,
    )))
}

/// `GET /v1/reconstructions/{file}`.
pub async fn reconstruction_v1(
    State(state): State<HttpState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ReconstructionV1>, ApiError> {
    Ok(Json(ReconstructionV1::from(
        &reconstruct(&state, &file, &headers).await?,
    )))
}

/// Files a batch reconstruction may ask for at once.
const MAX_BATCH_FILES: usize = 1000;

/// `GET /v1/reconstructions?file_id=…&file_id=…`.
pub async fn reconstructions_batch(
    State(state): State<HttpState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<BatchReconstruction>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let mut ids = Vec::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("file_id", v)) => ids.push(parse_hash(v)?),
            _ => {
                return Err(ServiceError::bad_request(
                    "bad_query",
                    format!("unexpected query parameter {pair:?}"),
                )
                .into());
            }
        }
    }
    if ids.is_empty() || ids.len() > MAX_BATCH_FILES {
        return Err(ServiceError::bad_request(
            "bad_query",
            format!("give 1 to {MAX_BATCH_FILES} file_id parameters"),
        )
        .into());
    }
    let mut out = BatchReconstruction {
        files: BTreeMap::new(),
        fetch_info: BTreeMap::new(),
    };
    for id in ids {
        let r = state.service.reconstruction(&id, None).await?;
        out.files.insert(id.to_hex(), terms(&r));
        for (xorb, entries) in fetch_info_v1(&r) {
            let slot = out.fetch_info.entry(xorb).or_default();
            for e in entries {
                if !slot.contains(&e) {
                    slot.push(e);
                }
            }
        }
    }
    Ok(Json(out))
}

/// `GET /v1/chunks/{prefix}/{chunk}`: accepts the spec's `default-merkledb` and the
/// `default` that hf_xet sends.
pub async fn dedup_query(
    State(state): State<HttpState>,
    Path((prefix, chunk)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    if prefix != "default" && prefix != "default-merkledb" {
        return Err(ServiceError::bad_request(
            "unknown_prefix",
            format!("unknown dedup prefix {prefix:?}"),
        )
        .into());
    }
    let chunk = parse_hash(&chunk)?;
    let shard = state.service.query_dedup(&chunk).await?;
    Ok(([(CONTENT_TYPE, "application/octet-stream")], shard).into_response())
}

/// `POST /v1/xorbs/default/{xorb}`: the body streams into the service, which
/// checks it as it arrives.
pub async fn upload_xorb(
    State(state): State<HttpState>,
    Path((prefix, xorb)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (caller, body) = authorize_upload(&state, &headers, Scope::Write, body).await?;
    let named = check_xorb_prefix(&prefix).and_then(|()| Ok(parse_hash(&xorb)?));
    let hash = match named {
        Ok(hash) => hash,
        Err(e) => {
            drain(body, &headers).await;
            return Err(e);
        }
    };
    let frames = body
        .into_data_stream()
        .map(|frame| frame.map_err(ServiceError::body_read_failed));
    let r = state
        .service
        .upload_xorb_stream(&caller, hash, declared_length(&headers), frames)
        .await?;
    Ok(Json(json!({"was_inserted": r.inserted})))
}

/// A bodiless 200 whose `Content-Length` is `len` (answers to HEAD).
fn head_ok(len: u64) -> Response {
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// `HEAD /v1/xorbs/default/{xorb}`.
pub async fn head_xorb(
    State(state): State<HttpState>,
    Path((prefix, xorb)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    check_xorb_prefix(&prefix)?;
    let hash = parse_hash(&xorb)?;
    match state.service.xorb_size(&hash).await? {
        Some(len) => Ok(head_ok(len)),
        None => Err(ServiceError::XorbNotFound(hash).into()),
    }
}

/// `HEAD /v1/files/{file}`.
pub async fn head_file(
    State(state): State<HttpState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let hash = parse_hash(&file)?;
    match state.service.file_size(&hash).await? {
        Some(len) => Ok(head_ok(len)),
        None => Err(ServiceError::FileNotFound(hash).into()),
    }
}

/// `POST /v1/shards`: `{"result": 0|1}`.
pub async fn upload_shard_v1(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (caller, body) = authorize_upload(&state, &headers, Scope::Write, body).await?;
    let body = read_body(
        body,
        "shard",
        state.service.limits().max_shard_bytes,
        &headers,
    )
    .await?;
    let r = state.service.upload_shard(&caller, body, |_| {}).await?;
    Ok(Json(json!({"result": r.xet_result()})))
}

/// One NDJSON frame of `/v2/shards`.
fn frame(value: serde_json::Value) -> Bytes {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    Bytes::from(line)
}

fn progress_frame(p: ShardProgress) -> Bytes {
    match p {
        ShardProgress::Validating { verified, total } => {
            frame(json!({"type": "validating", "verified": verified, "total": total}))
        }
        ShardProgress::Uploading => frame(json!({"type": "committing", "stage": "uploading"})),
        ShardProgress::Syncing => frame(json!({"type": "committing", "stage": "syncing"})),
    }
}

/// What the shard upload task reports to the `/v2/shards` response.
enum ShardEvent {
    Progress(ShardProgress),
    Done(Result<u8, ServiceError>),
}

fn event_frame(e: ShardEvent) -> Bytes {
    match e {
        ShardEvent::Progress(p) => progress_frame(p),
        ShardEvent::Done(Ok(result)) => frame(json!({"type": "result", "result": result})),
        ShardEvent::Done(Err(e)) => frame(json!({
            "type": "error",
            "code": e.code(),
            "message": e.to_string(),
            "retryable": e.is_retryable(),
        })),
    }
}

/// `POST /v2/shards`: NDJSON progress frames, then a terminal `result` or `error`.
///
/// The response starts with the first progress frame; an error found before that
/// (bad shard, unknown xorb, failed checks of a small shard) is answered with its HTTP
/// status like `/v1/shards`, one found later with a terminal error frame.
pub async fn upload_shard_v2(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (caller, body) = authorize_upload(&state, &headers, Scope::Write, body).await?;
    let body = read_body(
        body,
        "shard",
        state.service.limits().max_shard_bytes,
        &headers,
    )
    .await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<ShardEvent>();
    let service = state.service.clone();
    // The upload runs to completion even if the client goes away: it is idempotent, and
    // stopping it half-way gains nothing.
    tokio::spawn(async move {
        let progress_tx = tx.clone();
        let outcome = service
            .upload_shard(&caller, body, move |p| {
                let _ = progress_tx.send(ShardEvent::Progress(p));
            })
            .await;
        let _ = tx.send(ShardEvent::Done(outcome.map(|r| r.xet_result())));
    });
    let first = match rx.recv().await {
        Some(ShardEvent::Done(Err(e))) => return Err(e.into()),
        Some(event) => event,
        None => {
            return Err(ServiceError::Inconsistent(
                "the shard upload task stopped without an outcome".into(),
            )
            .into());
        }
    };
    let rest =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    let frames = futures::stream::iter([first])
        .chain(rest)
        .map(|e| Ok::<_, std::convert::Infallible>(event_frame(e)));
    let mut resp = Response::new(Body::from_stream(frames));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

/// `POST /v1/telemetry`: accepted and logged at debug level (fire-and-forget).
pub async fn telemetry(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let (_, body) = authorize_upload(&state, &headers, Scope::Read, body).await?;
    let body = read_body(body, "telemetry", 64 * 1024, &headers).await?;
    tracing::debug!(event = %String::from_utf8_lossy(&body), "client telemetry");
    Ok(StatusCode::OK)
}

/// `POST /v1/xorb-grants/…`: grants are not offered; the client uploads directly.
pub async fn no_grants() -> Response {
    let body = json!({"error": {"code": "grants_unavailable", "message": "xorb upload grants are not offered; POST the xorb to /v1/xorbs/default/{hash}"}});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// `GET /healthz`: 200 with the index status when the node can serve.
pub async fn healthz(State(state): State<HttpState>) -> Response {
    let status = state.service.index().status();
    (
        StatusCode::OK,
        Json(json!({"status": "ok", "index": format!("{status:?}")})),
    )
        .into_response()
}

/// Any other path.
pub async fn not_found() -> Response {
    let body = json!({"error": {"code": "no_such_route", "message": "no such endpoint"}});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}
