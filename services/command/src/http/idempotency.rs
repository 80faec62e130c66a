//! `Idempotency-Key` on the creating routes, as Stripe's API has it: a client that did not get the
//! answer to a request (a timeout, a dropped connection, a crashed replica) sends it again with the same
//! key and gets the first answer, without a second write.
//!
//! - The key is claimed in the write's own transaction, so it exists exactly when the write does: a
//!   request that failed left no key, and its retry runs afresh.
//! - The same key with the same route and body returns the stored response, with
//!   `Idempotent-Replayed: true`. The same key with anything else is a 422 `idempotency_key_reused`.
//! - A concurrent request with a key in flight waits for the first to finish, then replays it.
//! - Keys are scoped to the client's bearer token, and kept for [`store::idempotency::RETENTION`].

use analytics_kit::http::Caller;
use axum::{
    extract::FromRequestParts,
    http::{HeaderName, HeaderValue, request::Parts},
};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use super::error::ApiError;
use crate::store::{self, idempotency::Claim};

pub const HEADER: &str = "idempotency-key";
/// Marks a response that replays an earlier one.
pub const REPLAYED: (HeaderName, HeaderValue) =
    (HeaderName::from_static("idempotent-replayed"), HeaderValue::from_static("true"));

/// A request's `Idempotency-Key`, if it has one, and the client it belongs to.
#[derive(Debug)]
pub struct Idempotency {
    key: Option<String>,
    scope: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Idempotency {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let scope = parts.extensions.get::<Caller>().map_or_else(String::new, |caller| caller.0.clone());
        let key = match parts.headers.get(HEADER) {
            None => None,
            Some(value) => {
                let key = value
                    .to_str()
                    .ok()
                    .filter(|key| (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()))
                    .ok_or(ApiError::InvalidIdempotencyKey)?;
                Some(key.to_owned())
            }
        };
        Ok(Self { key, scope })
    }
}

impl Idempotency {
    /// What identifies the request under its key: its route and its body, as canonical JSON.
    pub fn fingerprint(route: &str, request: &impl Serialize) -> Vec<u8> {
        let body = serde_json::to_vec(request).expect("a request serializes");
        let mut hash = Sha256::new();
        hash.update(route.as_bytes());
        hash.update([0]);
        hash.update(&body);
        hash.finalize().to_vec()
    }

    /// Claims the key, if there is one, in `tx`; `Some(response)` when an earlier request with the same
    /// key and fingerprint succeeded, and the caller replays it.
    pub async fn claim(&self, tx: &mut PgConnection, fingerprint: &[u8]) -> Result<Option<Value>, ApiError> {
        let Some(key) = &self.key else { return Ok(None) };
        match store::idempotency::claim(tx, &self.scope, key, fingerprint).await? {
            Claim::New => Ok(None),
            Claim::Replay(response) => Ok(Some(response)),
            Claim::Mismatch => Err(ApiError::IdempotencyKeyReused),
        }
    }

    /// Stores `response` under the key, if there is one, in the transaction that claimed it.
    pub async fn record(&self, tx: &mut PgConnection, response: &impl Serialize) -> Result<(), ApiError> {
        let Some(key) = &self.key else { return Ok(()) };
        let response = serde_json::to_value(response).expect("a response serializes");
        Ok(store::idempotency::record(tx, &self.scope, key, &response).await?)
    }
}
