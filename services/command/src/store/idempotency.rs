//! The `idempotency_keys` table: claiming a key inside the write's transaction, recording the response,
//! and pruning old keys.

use std::time::Duration;

use serde_json::Value;
use sqlx::{PgConnection, PgPool};

/// How long a key is kept: a client may retry with it for this long.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// What a claim found.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// The key is new, and now held by this transaction: go on, then [`record`] the response.
    New,
    /// The same request with this key succeeded before: its response.
    Replay(Value),
    /// The key was used for a different request.
    Mismatch,
}

/// Claims `key` for `request_hash`. A concurrent request with the same key waits here until the first
/// one commits (then this one finds its response) or rolls back (then this one claims the key).
pub async fn claim(conn: &mut PgConnection, scope: &str, key: &str, request_hash: &[u8]) -> sqlx::Result<Claim> {
    // A key pruned between the insert's conflict and the read is claimed on the next try; pruning takes
    // only keys a day old, so a second miss does not happen.
    loop {
        let claimed = sqlx::query(
            "insert into idempotency_keys (scope, key, request_hash) values ($1, $2, $3)
             on conflict (scope, key) do nothing",
        )
        .bind(scope)
        .bind(key)
        .bind(request_hash)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if claimed == 1 {
            return Ok(Claim::New);
        }
        let stored: Option<(Vec<u8>, Option<Value>)> =
            sqlx::query_as("select request_hash, response from idempotency_keys where scope = $1 and key = $2")
                .bind(scope)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?;
        match stored {
            Some((stored_hash, Some(response))) if stored_hash == request_hash => return Ok(Claim::Replay(response)),
            Some(_) => return Ok(Claim::Mismatch),
            None => {}
        }
    }
}

/// Stores the response of the request that claimed `key`, in its transaction.
pub async fn record(conn: &mut PgConnection, scope: &str, key: &str, response: &Value) -> sqlx::Result<()> {
    sqlx::query("update idempotency_keys set response = $3 where scope = $1 and key = $2")
        .bind(scope)
        .bind(key)
        .bind(response)
        .execute(conn)
        .await
        .map(drop)
}

/// Deletes every key older than `retention`; returns how many.
pub async fn prune(pool: &PgPool, retention: Duration) -> u64 {
    let delete = "delete from idempotency_keys where (scope, key) in (
                      select scope, key from idempotency_keys where created_at < now() - $1 * interval '1 second' limit $2)";
    analytics_kit::db::prune(pool, "idempotency keys", delete, retention).await
}
