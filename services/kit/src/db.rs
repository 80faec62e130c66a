//! PostgreSQL connection pools, and how their failures are told apart: a broken connection is retried
//! once on a fresh one where that is safe, the database being unavailable is a 503, not a 500, and one
//! known to be unreachable is a 503 at once.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    ConnectOptions, Connection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
};
use tokio::sync::watch;

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
///
/// The URL may say, as libpq's `target_session_attrs`, which server its connections must be on: `primary`
/// or `standby` (or `any`, the default). libpq checks once, when it connects; a standby can be promoted
/// under its open connections (a failover, a switchover), so a pool that must read standbys also checks
/// a connection each time it hands it out (a round trip), and closes one that is on a primary now.
pub fn pool(url: &SecretString, max_connections: u32, application_name: &str) -> Result<Database, sqlx::Error> {
    let (options, target) = connect_options(url)?;
    let options = options.options([("statement_timeout", STATEMENT_TIMEOUT)]).application_name(application_name);
    let pool = lazy_pool(options.clone(), target, max_connections);
    let (down, _) = watch::channel(false);
    Ok(Database { pool, reachability: Arc::new(Reachability { options, down, probing: AtomicBool::new(false) }) })
}

/// A service's pool, and whether its database is known to be unreachable: while it is, a request is
/// answered at once (a 503) instead of waiting out [`ACQUIRE_TIMEOUT`] for a connection that cannot be
/// made. It derefs to the pool for everything else.
///
/// Nothing is known until a request waits: one that has no connection after [`PROBE_AFTER`], or whose
/// connection broke, starts a probe, a connection of its own outside the pool. If the probe cannot
/// connect, the waiting requests and every later one that would need a new connection get the 503,
/// until a probe (every [`PROBE_INTERVAL`]) connects again or a request gets through. A probe that
/// connects says nothing: the pool may be busy, and the request goes on waiting for its connection.
#[derive(Debug, Clone)]
pub struct Database {
    pool: PgPool,
    reachability: Arc<Reachability>,
}

#[derive(Debug)]
struct Reachability {
    /// What the probe connects with: the pool's own options.
    options: PgConnectOptions,
    /// Whether the last probe could not connect.
    down: watch::Sender<bool>,
    /// Whether a probe is running; at most one is.
    probing: AtomicBool,
}

/// How long a request waits for a connection before the database is probed.
const PROBE_AFTER: Duration = Duration::from_millis(250);
/// How long a probe may take to connect; one that takes longer tells nothing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often an unreachable database is probed again.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

impl std::ops::Deref for Database {
    type Target = PgPool;

    fn deref(&self) -> &PgPool {
        &self.pool
    }
}

impl Database {
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Begins a transaction, and once more if the connection turns out broken. After a database restart
    /// every pooled connection is broken, so the idle ones are closed first and the retry gets a new one.
    /// Nothing was done on the broken connection, so the retry is safe.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.once_more_if_broken(|| self.pool.begin()).await
    }

    /// Runs `read`, and once more after a broken connection (see [`Database::begin`]). Only for reads: a
    /// write whose connection broke may have been done.
    pub async fn read<T, F, Fut>(&self, read: F) -> Result<T, sqlx::Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        self.once_more_if_broken(read).await
    }

    /// `attempt`, [`guarded`](Self::guarded), and once more after a broken connection: the idle
    /// connections are closed first, and a probe starts. Only for what is safe to do twice.
    async fn once_more_if_broken<T, F, Fut>(&self, attempt: F) -> Result<T, sqlx::Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        self.guarded(async {
            match attempt().await {
                Err(error) if is_broken_connection(&error) => {
                    self.probe();
                    discard_idle(&self.pool, &error).await;
                    attempt().await
                }
                done => done,
            }
        })
        .await
    }

    /// Whether the database answers a trivial query within a second (a readiness probe must not hang on
    /// a database that is down).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        let ping = self.read(|| sqlx::query("select 1").execute(&self.pool));
        match tokio::time::timeout(Duration::from_secs(1), ping).await {
            Ok(pinged) => pinged.map(drop),
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    /// `attempt`, which takes a connection of the pool, unless the database is known to be unreachable
    /// or a probe finds it so while the attempt waits: then an [`Unreachable`] error.
    async fn guarded<T>(&self, attempt: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, sqlx::Error> {
        let mut down = self.reachability.down.subscribe();
        // Idle connections are worth a try: a probe's word may be older than a quick restart, and the
        // first broken one discards them all.
        if *down.borrow_and_update() && self.pool.num_idle() == 0 {
            return Err(unreachable());
        }
        tokio::pin!(attempt);
        let done = tokio::select! {
            biased;
            done = &mut attempt => done,
            () = tokio::time::sleep(PROBE_AFTER) => {
                self.probe();
                tokio::select! {
                    biased;
                    done = &mut attempt => done,
                    _ = down.wait_for(|down| *down) => return Err(unreachable()),
                }
            }
        };
        if done.is_ok() && self.reachability.down.send_replace(false) {
            tracing::info!("the database is reachable again");
        }
        done
    }

    /// Starts a probe unless one runs. It connects every [`PROBE_INTERVAL`] until it can, saying in
    /// `down` whether it could not.
    fn probe(&self) {
        if self.reachability.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let reachability = self.reachability.clone();
        tokio::spawn(async move {
            loop {
                let connected = tokio::time::timeout(PROBE_TIMEOUT, reachability.options.connect()).await;
                let failure = match connected {
                    Ok(Ok(connection)) => {
                        drop(connection.close().await);
                        None
                    }
                    // Only a definite failure counts. A server that answers, if only to refuse (out of
                    // connections, a bad password), is reachable: the pool's connections may be fine. A
                    // connection that is merely slow says nothing either: a busy machine is not a down
                    // database, and the request still has its own acquire timeout.
                    Ok(Err(error)) if is_broken_connection(&error) || is_starting_up(&error) => Some(error.to_string()),
                    Ok(Err(_)) | Err(_) => None,
                };
                let was_down = reachability.down.send_replace(failure.is_some());
                let Some(error) = failure else {
                    if was_down {
                        tracing::info!("the database is reachable again");
                    }
                    break;
                };
                if !was_down {
                    tracing::warn!(%error, "the database is unreachable; requests are answered 503 until it is back");
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
            reachability.probing.store(false, Ordering::Release);
        });
    }
}

/// What a request gets, at once, while its database is known to be unreachable.
#[derive(Debug, thiserror::Error)]
#[error("the database cannot be reached")]
pub struct Unreachable;

fn unreachable() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::NotConnected, Unreachable))
}

/// Whether `error` is the [`Unreachable`] answer of a [`Database`] whose database is known to be down.
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Io(io) if io.get_ref().is_some_and(|inner| inner.is::<Unreachable>()))
}

fn is_starting_up(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.code().as_deref() == Some("57P03"))
}

/// The longest a service's statement may run, below the HTTP request timeout: none of theirs should come
/// near it, so one that does is
/// stuck (a lock, a runaway plan) and is better cancelled than left holding a connection.
pub const STATEMENT_TIMEOUT: &str = "20s";

/// The server a pool's connections must be on: libpq's `target_session_attrs`, of which the values that
/// name a server's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetSession {
    Any,
    Primary,
    Standby,
}

impl TargetSession {
    const PARAMETER: &str = "target_session_attrs";

    fn parse(value: &str) -> Result<Self, sqlx::Error> {
        match value {
            "any" => Ok(Self::Any),
            "primary" => Ok(Self::Primary),
            "standby" => Ok(Self::Standby),
            other => Err(sqlx::Error::Configuration(
                format!("{}={other} is not supported: use any, primary or standby", Self::PARAMETER).into(),
            )),
        }
    }

    /// What `pg_is_in_recovery()` must answer on the server, if anything.
    fn in_recovery(self) -> Option<bool> {
        match self {
            Self::Any => None,
            Self::Primary => Some(false),
            Self::Standby => Some(true),
        }
    }
}

/// The options of `url`, and the server it asks for; `target_session_attrs`, which sqlx does not know,
/// is taken out of the URL before sqlx reads it.
fn connect_options(url: &SecretString) -> Result<(PgConnectOptions, TargetSession), sqlx::Error> {
    let mut text = url.expose_secret().to_owned();
    let mut target = TargetSession::Any;
    if let Ok(mut parsed) = url::Url::parse(&text)
        && let Some((_, value)) = parsed.query_pairs().find(|(name, _)| name == TargetSession::PARAMETER)
    {
        target = TargetSession::parse(&value)?;
        let rest: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(name, _)| name != TargetSession::PARAMETER)
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        parsed.set_query(None);
        if !rest.is_empty() {
            parsed.query_pairs_mut().extend_pairs(rest);
        }
        text = parsed.into();
    }
    let options: PgConnectOptions = text.parse()?;
    // A root certificate is given to be checked against: never encrypt without verifying, nor fall back
    // to plaintext, once one is there.
    let weak = matches!(options.get_ssl_mode(), PgSslMode::Prefer | PgSslMode::Allow | PgSslMode::Require);
    if weak && has_root_cert(&text) {
        return Ok((options.ssl_mode(PgSslMode::VerifyCa), target));
    }
    Ok((options, target))
}

async fn in_recovery(connection: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select pg_is_in_recovery()").fetch_one(connection).await
}

/// How long a request waits for a connection before it is answered 503: a burst on two cores can queue
/// for seconds (2 s turned some of a test burst's orders away), and a database that is down is not
/// told apart from a busy one by the pool.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A lazy pool whose connections are on the server `target` asks for: one made on another is closed (and
/// another made, until [`ACQUIRE_TIMEOUT`]), and so is an idle one whose server changed role meanwhile.
fn lazy_pool(options: PgConnectOptions, target: TargetSession, max_connections: u32) -> PgPool {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false);
    let Some(wanted) = target.in_recovery() else { return pool.connect_lazy_with(options) };
    pool.after_connect(move |connection, _| {
        Box::pin(async move {
            if in_recovery(connection).await? == wanted {
                return Ok(());
            }
            let message = format!("the server is not a {target:?} (target_session_attrs)").to_lowercase();
            Err(sqlx::Error::Configuration(message.into()))
        })
    })
    .before_acquire(move |connection, _| Box::pin(async move { Ok(in_recovery(connection).await? == wanted) }))
    .connect_lazy_with(options)
}

/// Whether a root certificate is given, in the URL (under any name sqlx reads) or the environment.
fn has_root_cert(url: &str) -> bool {
    let names = ["sslrootcert", "ssl-root-cert", "ssl-ca"];
    let in_url =
        url::Url::parse(url).is_ok_and(|url| url.query_pairs().any(|(name, _)| names.contains(&name.as_ref())));
    in_url || std::env::var_os("PGSSLROOTCERT").is_some()
}

/// A pool for maintenance (migrations, verifying and rebuilding the read model): without the services'
/// statement timeout, since building an index or reading a view of millions of rows takes longer.
pub fn maintenance_pool(
    url: &SecretString,
    max_connections: u32,
    application_name: &str,
) -> Result<PgPool, sqlx::Error> {
    let (options, target) = connect_options(url)?;
    Ok(lazy_pool(options.application_name(application_name), target, max_connections))
}

/// Applies `migrator`'s migrations to the database at `url` over one connection. Safe to run
/// concurrently: sqlx takes an advisory lock, so a second runner waits and then finds nothing to do.
pub async fn migrate(
    url: &SecretString,
    migrator: &sqlx::migrate::Migrator,
    application_name: &str,
) -> Result<(), sqlx::migrate::MigrateError> {
    let pool = maintenance_pool(url, 1, application_name)?;
    let migrated = migrator.run(&pool).await;
    pool.close().await;
    migrated
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
        let timeout: String = sqlx::query_scalar("show statement_timeout").fetch_one(service.pool()).await.unwrap();
        assert_eq!(timeout, STATEMENT_TIMEOUT);
        let migrations = maintenance_pool(&url, 1, "test").unwrap();
        let timeout: String = sqlx::query_scalar("show statement_timeout").fetch_one(&migrations).await.unwrap();
        assert_eq!(timeout, "0");
    }

    /// The test database is a primary: a pool that asks for one gets its connections (with the URL's
    /// other parameters), one that asks for a standby gets none, and says why in its log.
    #[tokio::test]
    async fn a_pool_connects_only_to_the_server_its_url_asks_for() {
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            panic!("TEST_DATABASE_URL is not set: run the tests with `make test`")
        };
        let asking = |target: &str| {
            let url = format!("{url}/postgres?application_name=asked&target_session_attrs={target}&sslmode=disable");
            pool(&url.into(), 2, "test").unwrap()
        };
        for target in ["primary", "any"] {
            let database = asking(target);
            let name: String = sqlx::query_scalar("show application_name").fetch_one(database.pool()).await.unwrap();
            assert_eq!(name, "test", "{target}: the other parameters stay (the service's own name wins)");
        }
        let standby = asking("standby");
        let refused = sqlx::query("select 1").execute(standby.pool()).await.expect_err("no standby here");
        assert!(matches!(refused, sqlx::Error::PoolTimedOut), "{refused:?}");
        assert_eq!(standby.pool().size(), 0, "the connection to the primary was not kept");
    }

    #[tokio::test]
    async fn a_database_url_that_does_not_parse_is_refused_without_its_password() {
        for url in [
            "postgres://analytics:s3cret-pw@db:notaport/write",
            "postgres://analytics:s3cret-pw@db/write?sslmode=sometimes",
            "postgres://analytics:s3cret-pw@db/write?target_session_attrs=read-write",
        ] {
            let error = pool(&url.into(), 1, "test").expect_err("a bad URL is refused");
            let text = format!("{error} {error:?}");
            assert!(!text.contains("s3cret-pw"), "{url}: {text}");
        }
    }
}
