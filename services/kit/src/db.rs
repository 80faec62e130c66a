//! PostgreSQL connection pools, and how their failures are told apart: a broken connection is retried
//! once on a fresh one where that is safe, and the database being unavailable is a 503, not a 500.

use std::{future::Future, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
};

/// A pool that connects lazily, so a service starts (and reports not-ready) while its database is down.
///
/// TLS follows libpq's `sslmode`: `require` encrypts, `verify-ca` also checks the certificate against the
/// system's roots plus the `sslrootcert` file (or `PGSSLROOTCERT`), `verify-full` checks the host name
/// too. As in libpq, `require` with a root certificate given verifies it, as `verify-ca` does (sqlx alone
/// would not); so do `prefer` and `allow`, which would otherwise fall back to plaintext or skip the check.
/// A mode that asks for TLS fails against a server without it; it never falls back.
///
/// Connections are not pinged before each use: that would add a round trip to every transaction, and a
/// connection that broke meanwhile fails its statement instead, which every caller already treats as a
/// transient error (retry, or a 500 the client may retry); the pool then replaces it.
pub fn pool(url: &SecretString, max_connections: u32, application_name: &str) -> Result<PgPool, sqlx::Error> {
    let options = connect_options(url)?.options([("statement_timeout", STATEMENT_TIMEOUT)]);
    Ok(lazy_pool(options.application_name(application_name), max_connections))
}

/// The longest a service's statement may run, below the HTTP request timeout: none of theirs should come
/// near it, so one that does is
/// stuck (a lock, a runaway plan) and is better cancelled than left holding a connection.
pub const STATEMENT_TIMEOUT: &str = "20s";

fn connect_options(url: &SecretString) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = url.expose_secret().parse()?;
    // A root certificate is given to be checked against: never encrypt without verifying, nor fall back
    // to plaintext, once one is there.
    let weak = matches!(options.get_ssl_mode(), PgSslMode::Prefer | PgSslMode::Allow | PgSslMode::Require);
    if weak && has_root_cert(url.expose_secret()) {
        return Ok(options.ssl_mode(PgSslMode::VerifyCa));
    }
    Ok(options)
}

/// How long a request waits for a connection before it is answered 503: a burst on two cores can queue
/// for seconds (2 s turned some of a test burst's orders away), and a database that is down is not
/// told apart from a busy one by the pool.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

fn lazy_pool(options: PgConnectOptions, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .connect_lazy_with(options)
}

/// Whether a root certificate is given, in the URL (under any name sqlx reads) or the environment.
fn has_root_cert(url: &str) -> bool {
    let names = ["sslrootcert", "ssl-root-cert", "ssl-ca"];
    let in_url =
        url::Url::parse(url).is_ok_and(|url| url.query_pairs().any(|(name, _)| names.contains(&name.as_ref())));
    in_url || std::env::var_os("PGSSLROOTCERT").is_some()
}

/// Applies `migrator`'s migrations to the database at `url` over one connection. Safe to run
/// concurrently: sqlx takes an advisory lock, so a second runner waits and then finds nothing to do.
pub async fn migrate(
    url: &SecretString,
    migrator: &sqlx::migrate::Migrator,
    application_name: &str,
) -> Result<(), sqlx::migrate::MigrateError> {
    // Without the services' statement timeout: building an index on a large table may take longer.
    let pool = lazy_pool(connect_options(url)?.application_name(application_name), 1);
    let migrated = migrator.run(&pool).await;
    pool.close().await;
    migrated
}

/// Whether the database answers a trivial query within a second (a readiness probe must not hang on a
/// database that is down).
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    let ping = read(pool, || sqlx::query("select 1").execute(pool));
    match tokio::time::timeout(Duration::from_secs(1), ping).await {
        Ok(pinged) => pinged.map(drop),
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// Whether `error` says that the connection broke (or was never made), rather than that the database
/// refused a statement: an I/O or TLS error, a protocol error, or the server's shutdown and connection
/// exception codes (57P01, 57P02, class 08).
pub fn is_broken_connection(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(database) => {
            database.code().is_some_and(|code| code == "57P01" || code == "57P02" || code.starts_with("08"))
        }
        _ => false,
    }
}

/// Whether the database cannot serve the request now but may soon: a broken connection, no connection
/// within [`ACQUIRE_TIMEOUT`], a server starting or shutting down (57P03) or out of connections (53300).
/// The client may retry; the answer is a 503.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    is_broken_connection(error)
        || matches!(error, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
        || matches!(error, sqlx::Error::Database(database) if matches!(database.code().as_deref(), Some("57P03" | "53300")))
}

/// Begins a transaction, and once more if the connection turns out broken. After a database restart
/// every pooled connection is broken, so the idle ones are closed first and the retry gets a new one.
/// Nothing was done on the broken connection, so the retry is safe.
pub async fn begin(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    match pool.begin().await {
        Err(error) if is_broken_connection(&error) => {
            discard_idle(pool, &error).await;
            pool.begin().await
        }
        begun => begun,
    }
}

/// Runs `read`, and once more after a broken connection (see [`begin`]). Only for reads: a write whose
/// connection broke may have been done.
pub async fn read<T, F, Fut>(pool: &PgPool, read: F) -> Result<T, sqlx::Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    match read().await {
        Err(error) if is_broken_connection(&error) => {
            discard_idle(pool, &error).await;
            read().await
        }
        done => done,
    }
}

/// Closes every idle connection of `pool`: one broke, so the others, made before the same failure,
/// most likely did too.
async fn discard_idle(pool: &PgPool, cause: &sqlx::Error) {
    let mut closed = 0;
    while let Some(connection) = pool.try_acquire() {
        drop(connection.close().await);
        closed += 1;
    }
    tracing::warn!(error = %cause, closed, "a database connection broke; idle connections closed, retrying once");
}

/// How many rows one pruning statement deletes: small enough for short locks, large enough to be cheap.
pub const PRUNE_BATCH: u64 = 10_000;

/// Deletes expired `rows` batch after batch until a batch comes back short, so that one pass clears a
/// backlog of any size at the database's pace (a fixed batch per tick fell behind a busy pipeline).
/// `delete` is one statement that removes up to `$2` ([`PRUNE_BATCH`]) rows older than `$1` seconds
/// (`retention`). Returns the rows deleted; an error ends the pass and is logged.
pub async fn prune(pool: &PgPool, rows: &str, delete: &'static str, retention: Duration) -> u64 {
    let started = std::time::Instant::now();
    let mut total = 0;
    loop {
        let deleted = sqlx::query(delete)
            .bind(retention.as_secs_f64())
            .bind(PRUNE_BATCH as i64)
            .execute(pool)
            .await
            .map(|done| done.rows_affected());
        match deleted {
            Ok(deleted) => {
                total += deleted;
                if deleted < PRUNE_BATCH {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot prune {rows}");
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    if total > 0 {
        let per_second = total as f64 / started.elapsed().as_secs_f64().max(0.001);
        tracing::info!(count = total, per_second = per_second.round(), "pruned {rows}");
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn service_statements_time_out_and_migrations_do_not() {
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            panic!("TEST_DATABASE_URL is not set: run the tests with `make test`")
        };
        let url = SecretString::from(format!("{url}/postgres"));
        let service = pool(&url, 1, "test").unwrap();
        let timeout: String = sqlx::query_scalar("show statement_timeout").fetch_one(&service).await.unwrap();
        assert_eq!(timeout, STATEMENT_TIMEOUT);
        let migrations = lazy_pool(connect_options(&url).unwrap(), 1);
        let timeout: String = sqlx::query_scalar("show statement_timeout").fetch_one(&migrations).await.unwrap();
        assert_eq!(timeout, "0");
    }

    #[tokio::test]
    async fn a_database_url_that_does_not_parse_is_refused_without_its_password() {
        for url in [
            "postgres://analytics:s3cret-pw@db:notaport/write",
            "postgres://analytics:s3cret-pw@db/write?sslmode=sometimes",
        ] {
            let error = pool(&url.into(), 1, "test").expect_err("a bad URL is refused");
            let text = format!("{error} {error:?}");
            assert!(!text.contains("s3cret-pw"), "{url}: {text}");
        }
    }
}
