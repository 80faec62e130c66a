//! The query API's errors, in the command API's shape.

use analytics_kit::http::error_response;
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0} must be a positive integer")]
    InvalidId(&'static str),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("product {0} does not exist")]
    ProductNotFound(i64),
    #[error("category {0:?} does not exist")]
    CategoryNotFound(String),
    #[error("internal error")]
    Database(#[from] sqlx::Error),
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::InvalidId(_) => (StatusCode::BAD_REQUEST, "invalid_path"),
            Self::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            Self::ProductNotFound(_) | Self::CategoryNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Database(error) => {
                tracing::error!(error = %error, source = ?std::error::Error::source(error), "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        error_response(status, code, self.to_string())
    }
}

pub fn positive_id(raw: i64, what: &'static str) -> Result<i64> {
    if raw > 0 { Ok(raw) } else { Err(QueryError::InvalidId(what)) }
}
