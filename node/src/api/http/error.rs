//! Errors as HTTP responses: the status, a JSON body with the stable code, and
//! `WWW-Authenticate` on 401.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::service::ServiceError;

/// A service error on its way out as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub ServiceError);

impl<E: Into<ServiceError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code = e.code(), error = %e, "request failed");
        } else {
            tracing::debug!(code = e.code(), error = %e, "request refused");
        }
        let body = json!({"error": {"code": e.code(), "message": e.to_string()}});
        let mut resp = (status, Json(body)).into_response();
        if let ServiceError::Auth(auth) = &e
            && status == StatusCode::UNAUTHORIZED
            && let Ok(v) = HeaderValue::from_str(&auth.www_authenticate())
        {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}
