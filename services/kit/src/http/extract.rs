//! Drop-in replacements for axum's `Json`, `Path` and `Query` whose rejections use the JSON error shape,
//! and `PositiveId` for a route's id.

use axum::{
    extract::{
        FromRequest, FromRequestParts,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{
        HeaderValue, StatusCode,
        header::{CONNECTION, CONTENT_ENCODING},
        request::Parts,
    },
    response::{IntoResponse, Response},
};

use super::{BODY_READ_TIMEOUT, error_response};

/// A JSON body, which must be a JSON object. Malformed JSON, another JSON value (an array, which serde
/// would otherwise read as a struct's fields in order), a missing field or a wrong type is a 400; a body
/// that has not arrived within [`BODY_READ_TIMEOUT`] is a 408; a body over the router's limit is a 413;
/// a request without `Content-Type: application/json`, or with a `Content-Encoding` (a compressed
/// body), is a 415.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Rejection;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Rejection> {
        let encoding = request.headers().get(CONTENT_ENCODING).map(|value| String::from_utf8_lossy(value.as_bytes()));
        if let Some(encoding) = encoding.filter(|encoding| !encoding.eq_ignore_ascii_case("identity")) {
            return Err(Rejection {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "unsupported_media_type",
                message: format!("Content-Encoding {encoding:?} is not accepted; send the JSON uncompressed"),
            });
        }
        let read = axum::Json::<Object<T>>::from_request(request, state);
        let Ok(read) = tokio::time::timeout(BODY_READ_TIMEOUT, read).await else {
            return Err(Rejection {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "request_timeout",
                message: format!("the body did not arrive within {BODY_READ_TIMEOUT:?}; nothing was done"),
            });
        };
        let axum::Json(Object(value)) = read?;
        Ok(Self(value))
    }
}

/// `T` read from a JSON object only.
struct Object<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);

        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Fields<T> {
            type Value = T;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer.deserialize_map(Fields(std::marker::PhantomData)).map(Object)
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters; a value of the wrong type is a 400.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Rejection))]
pub struct Path<T>(pub T);

/// Query parameters; a missing or malformed one is a 400.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Rejection))]
pub struct Query<T>(pub T);

/// The single path parameter of a route such as `/api/products/{id}`: a positive integer. Anything else
/// is a 400 `invalid_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositiveId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for PositiveId {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        let Path(raw) = Path::<i64>::from_request_parts(parts, state).await?;
        if raw > 0 {
            Ok(Self(raw))
        } else {
            Err(Rejection {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_path",
                message: format!("the id must be a positive integer, got {raw}"),
            })
        }
    }
}

/// An extractor's refusal, rendered in the common error shape.
#[derive(Debug)]
pub struct Rejection {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl From<JsonRejection> for Rejection {
    fn from(rejection: JsonRejection) -> Self {
        let (status, code) = match &rejection {
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            // axum says 422 for a well-formed body of the wrong shape; the contract says 400.
            JsonRejection::JsonDataError(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            JsonRejection::MissingJsonContentType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            other => (other.status(), "invalid_body"),
        };
        Self { status, code, message: rejection.body_text() }
    }
}

impl From<PathRejection> for Rejection {
    fn from(rejection: PathRejection) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "invalid_path", message: rejection.body_text() }
    }
}

impl From<QueryRejection> for Rejection {
    fn from(rejection: QueryRejection) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "invalid_query", message: rejection.body_text() }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = error_response(self.status, self.code, self.message);
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still come: the connection cannot carry another request.
            response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
