//! The API's error: a status and a JSON body (with every field error of an invalid
//! manifest set).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use motley_core::api::ErrorBody;
use motley_core::manifest;

/// An API error: a status and a JSON body.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub ErrorBody);

impl ApiError {
    pub(crate) fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError(
            status,
            ErrorBody {
                error: msg.into(),
                details: vec![],
            },
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<motley_store::StoreError> for ApiError {
    fn from(e: motley_store::StoreError) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        ApiError::new(e.status(), e.body_text())
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;

/// 422 with every field error: nothing was applied.
pub fn invalid(details: Vec<manifest::ManifestError>) -> ApiError {
    ApiError(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorBody {
            error: format!("{} invalid field(s); nothing was applied", details.len()),
            details,
        },
    )
}
