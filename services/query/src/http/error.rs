//! The query API's errors, in the command API's shape.

use analytics_kit::http::{database_error, error_response};
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
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
            Self::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            Self::ProductNotFound(_) | Self::CategoryNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Database(error) => return database_error(error),
        };
        error_response(status, code, self.to_string())
    }
}
