//! Appwrite's error body: `{"message","code","type","version"}` with the HTTP status.

use crate::APPWRITE_VERSION;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use model::{Error, ErrorCode};

#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl From<crate::Unavailable> for ApiError {
    fn from(e: crate::Unavailable) -> Self {
        tracing::warn!(reason = %e.0, "cluster unavailable");
        ApiError(Error::new(
            ErrorCode::GeneralUnavailable,
            "The server cannot reach a quorum of the cluster right now. Please try again.",
        ))
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<model::error::Message>) -> Self {
        ApiError(Error::new(code, message))
    }

    /// A 4xx: the request was refused (as opposed to the server failing).
    pub fn is_refusal(&self) -> bool {
        (400..500).contains(&self.0.code.status())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({
            "message": self.0.message.text(),
            "code": self.0.code.status(),
            "type": self.0.code.as_str(),
            "version": APPWRITE_VERSION,
        });
        (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
            body.to_string(),
        )
            .into_response()
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::GeneralRouteNotFound,
        "Route not found. Please ensure the endpoint is configured correctly and that the API route is valid for this SDK version. Refer to the API docs for more details.",
    )
}

/// The Python SDK reads `Content-Type` on every response, 204 included: never leave it out.
pub async fn ensure_content_type(mut res: Response) -> Response {
    if !res.headers().contains_key(header::CONTENT_TYPE) {
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=UTF-8"),
        );
    }
    res
}
