//! The one error shape every API answers with: `{"error": <code>, "message": <text>}`.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use crate::telemetry::Throttle;

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code such as `insufficient_stock`.
    pub error: String,
    /// A sentence for the human reading it.
    pub message: String,
}

/// The most characters of a message an error answers with: messages quote what the client sent (a
/// category's name, a field's), which may be as long as the body limit allows.
pub const MAX_MESSAGE_CHARS: usize = 300;

pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody { error: code.to_owned(), message: capped(message.into()) };
    (status, axum::Json(body)).into_response()
}

/// `message`, cut to [`MAX_MESSAGE_CHARS`] characters with a note of how many were left out.
fn capped(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => message,
        Some((end, _)) => {
            let left_out = message[end..].chars().count();
            format!("{}… ({left_out} more characters)", &message[..end])
        }
    }
}

/// A 500 for a failure the client cannot act on: the client learns nothing, the log gets the whole
/// cause chain.
pub fn internal_error(error: &(dyn std::error::Error + 'static)) -> Response {
    tracing::error!(error = %error, source = ?error.source(), "request failed");
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
}

/// The answer to a failed database call: a 503 with `Retry-After` if the database is unavailable for
/// now (it restarted, or is down or saturated; the client may retry), a 500 otherwise. One that is
/// known to be unreachable says so.
pub fn database_error(error: &sqlx::Error) -> Response {
    if !crate::db::is_unavailable(error) {
        return internal_error(error);
    }
    /// A database that is unavailable fails every request: say so now and then, not each time.
    static UNAVAILABLE: Throttle = Throttle::new(std::time::Duration::from_secs(10));
    let message = if crate::db::is_unreachable(error) {
        // Logged once, when it became so.
        "the database cannot be reached; retry shortly"
    } else {
        if let Some(held_back) = UNAVAILABLE.admit() {
            tracing::warn!(%error, held_back, "the database is unavailable; requests get 503 (counted in http_requests_total)");
        }
        "the database is unavailable; retry shortly"
    };
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
    response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
    response
}

/// The router fallback for unknown paths, in the common shape.
pub async fn route_not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// The fallback for a known path with the wrong method, in the common shape.
pub async fn method_not_allowed() -> Response {
    error_response(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_quoting_a_long_input_is_cut_on_a_character_boundary() {
        assert_eq!(capped("category \"Home\" does not exist".into()), "category \"Home\" does not exist");
        let long = format!("category {:?} does not exist", "é".repeat(60_000));
        let cut = capped(long);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + "… (59726 more characters)".chars().count(), "{cut}");
        assert!(cut.starts_with("category \"éé") && cut.ends_with("… (59726 more characters)"), "{cut}");
    }
}
