//! The managed backends' per-service identities, against a real PostgreSQL and a real RabbitMQ of the
//! test's own (roles and users are server-wide, so the shared test servers are left alone). The scripts
//! are the ones the operator ships: `postgres-roles.sql`, run with psql as the PostgreSQL pod's `roles`
//! container runs it, and `rabbitmq-definitions.sh`, whose output the broker imports at boot. Each
//! service's identity does its job and is refused what belongs to the others.

#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use analytics_events::{Stream, Topology};
use analytics_testkit::{hack, run};
use futures::StreamExt;
use lapin::{
    BasicProperties, Connection,
    options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::FieldTable,
};
use sqlx::{Connection as _, PgConnection};

fn children() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/children")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server of the test's own in `dir`, stopped and removed at the end.
struct Private {
    script: &'static str,
    dir: PathBuf,
}

impl Private {
    fn dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("identities-{name}-{}", uuid::Uuid::new_v4().simple()))
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        drop(
            Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack").join(self.script))
                .args(["stop", self.dir.to_str().unwrap()])
                .status(),
        );
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

const PASSWORDS: [(&str, &str); 3] =
    [("command", "pw-command-1"), ("consumer", "pw-consumer-1"), ("query", "pw-query-1")];

/// Runs the roles script as the administrator, as the pod's `roles` container does: the passwords in
/// the environment.
fn apply_roles(admin: &str, port: u16) {
    let mut command = Command::new("psql");
    command
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "analytics_write"])
        .env("PGPASSWORD", admin);
    for (role, password) in PASSWORDS {
        command.env(format!("{}_PASSWORD", role.to_uppercase()), password);
    }
    command.arg("-f").arg(children().join("postgres-roles.sql"));
    run(&mut command, None);
}

async fn connect(role: &str, port: u16, database: &str) -> Result<PgConnection, sqlx::Error> {
    let password = PASSWORDS.iter().find(|(name, _)| *name == role).unwrap().1;
    PgConnection::connect(&format!("postgres://{role}:{password}@127.0.0.1:{port}/{database}")).await
}

async fn execute(connection: &mut PgConnection, sql: &'static str) -> Result<(), String> {
    sqlx::raw_sql(sql).execute(connection).await.map(drop).map_err(|error| error.to_string())
}

/// A PostgreSQL of the test's own with the two databases, empty: its guard, port, the administrator's URL
/// (without a database) and password.
async fn private_postgres(name: &str) -> (Private, u16, String, String) {
    let guard = Private { script: "postgres.sh", dir: Private::dir(name) };
    let port = free_port();
    hack("postgres.sh", &["start", guard.dir.to_str().unwrap(), &port.to_string()]);
    let admin_url = std::fs::read_to_string(guard.dir.join("url")).unwrap();
    let admin = std::fs::read_to_string(guard.dir.join("password")).unwrap();
    // Both hold the superuser's password: the owner's only.
    for file in ["url", "password"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(guard.dir.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file} is {mode:o}");
    }
    let mut server = PgConnection::connect(&format!("{admin_url}/postgres")).await.unwrap();
    for database in ["analytics_write", "analytics_read"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {database}"))).execute(&mut server).await.unwrap();
    }
    (guard, port, admin_url, admin)
}

#[tokio::test]
async fn each_service_gets_a_postgres_role_that_can_do_its_job_and_nothing_else() {
    let (_server, port, admin_url, admin) = private_postgres("postgres").await;
    // The migrations run as the administrator, as the init containers run them.
    let write = sqlx::PgPool::connect(&format!("{admin_url}/analytics_write")).await.unwrap();
    command_service::MIGRATOR.run(&write).await.unwrap();
    let read = sqlx::PgPool::connect(&format!("{admin_url}/analytics_read")).await.unwrap();
    consumer_service::MIGRATOR.run(&read).await.unwrap();

    apply_roles(admin.trim(), port);
    // Idempotent: every start of the pod runs it again.
    apply_roles(admin.trim(), port);

    // command: every table of the write database, and nothing of the read one.
    let mut command = connect("command", port, "analytics_write").await.unwrap();
    execute(&mut command, "insert into products (name, category, price, stock) values ('Lamp', 'Home', 1, 1)")
        .await
        .unwrap();
    execute(&mut command, "update products set stock = 2; delete from outbox; select count(*) from orders")
        .await
        .unwrap();
    let denied = execute(&mut command, "create table mine (id int)").await.unwrap_err();
    assert!(denied.contains("permission denied"), "{denied}");
    let denied = execute(&mut command, "drop table products").await.unwrap_err();
    assert!(denied.contains("must be owner"), "{denied}");
    for (role, database) in
        [("command", "analytics_read"), ("consumer", "analytics_write"), ("query", "analytics_write")]
    {
        let refused = connect(role, port, database).await.err().unwrap_or_else(|| panic!("{role} reached {database}"));
        assert!(refused.to_string().contains("permission denied for database"), "{role}: {refused}");
    }

    // consumer: every table of the read database; query: reads it only.
    let mut consumer = connect("consumer", port, "analytics_read").await.unwrap();
    execute(&mut consumer, "delete from product_sales_view; delete from processed_events; select * from sync_state")
        .await
        .unwrap();
    let mut query = connect("query", port, "analytics_read").await.unwrap();
    execute(
        &mut query,
        "select * from product_sales_view, category_metrics_view, customer_ltv_view, hourly_sales_view",
    )
    .await
    .unwrap();
    for sql in ["delete from product_sales_view", "delete from processed_events", "create table mine (id int)"] {
        let denied = execute(&mut query, sql).await.unwrap_err();
        assert!(denied.contains("permission denied"), "{sql}: {denied}");
    }

    // A table that a later migration adds gets the same privileges, without the script running again.
    sqlx::raw_sql("create table later_view (id bigint primary key)").execute(&read).await.unwrap();
    execute(&mut consumer, "insert into later_view values (1)").await.unwrap();
    execute(&mut query, "select * from later_view").await.unwrap();
    let denied = execute(&mut query, "delete from later_view").await.unwrap_err();
    assert!(denied.contains("permission denied"), "{denied}");
}

/// The roles script and the migrations run at the same time (on a CloudNativePG cluster the roles Job and
/// the migrate init containers start together): a table whose migration is still open while the script
/// runs gets the grants too, once it commits.
#[tokio::test]
async fn a_table_a_migration_creates_while_the_roles_are_applied_gets_its_grants() {
    let (_server, port, admin_url, admin) = private_postgres("postgres-race").await;
    // A migration's transaction: it has created its table, and commits only after the script has begun.
    let mut migration = PgConnection::connect(&format!("{admin_url}/analytics_read")).await.unwrap();
    sqlx::raw_sql("begin; create table racing_view (id bigint primary key)").execute(&mut migration).await.unwrap();
    let roles = std::thread::spawn(move || apply_roles(admin.trim(), port));
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(!roles.is_finished(), "the script waits for the open migration");
    sqlx::raw_sql("commit").execute(&mut migration).await.unwrap();
    roles.join().unwrap();

    let mut consumer = connect("consumer", port, "analytics_read").await.unwrap();
    execute(&mut consumer, "insert into racing_view values (1)").await.unwrap();
    let mut query = connect("query", port, "analytics_read").await.unwrap();
    execute(&mut query, "select * from racing_view").await.unwrap();
}

/// What a user may do on the broker: each check on a channel of its own, since a refusal closes it.
async fn allowed(connection: &Connection, what: &str, action: impl AsyncFnOnce(&lapin::Channel) -> lapin::Result<()>) {
    let channel = connection.create_channel().await.unwrap();
    action(&channel).await.unwrap_or_else(|error| panic!("{what}: {error}"));
}

async fn refused(connection: &Connection, what: &str, action: impl AsyncFnOnce(&lapin::Channel) -> lapin::Result<()>) {
    let channel = connection.create_channel().await.unwrap();
    let error = action(&channel).await.err().unwrap_or_else(|| panic!("{what} was allowed"));
    assert!(error.to_string().contains("ACCESS_REFUSED"), "{what}: {error}");
}

async fn publish(channel: &lapin::Channel, exchange: &str, routing_key: &str) -> lapin::Result<()> {
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let properties = BasicProperties::default().with_delivery_mode(2);
    channel
        .basic_publish(exchange.into(), routing_key.into(), BasicPublishOptions::default(), b"{}", properties)
        .await?
        .await?;
    Ok(())
}

/// With `ERLANG_COOKIE`, the definitions container writes the managed node's cookie into its home,
/// readable by its owner only (Erlang refuses any other), and replaces it when the Secret's changes.
#[test]
fn the_definitions_container_writes_the_erlang_cookie_as_erlang_wants_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Private::dir("cookie");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let cookie = home.join(".erlang.cookie");
    for value in ["first-cookie", "first-cookie", "second-cookie"] {
        run(
            Command::new("bash")
                .arg(children().join("rabbitmq-definitions.sh"))
                .arg(&dir)
                .env("HOME", &home)
                .env("ERLANG_COOKIE", value)
                .env("RABBITMQ_DEFAULT_PASS", "pw-admin-1")
                .envs(PASSWORDS.map(|(user, password)| (format!("{}_PASSWORD", user.to_uppercase()), password))),
            None,
        );
        assert_eq!(std::fs::read_to_string(&cookie).unwrap(), value);
        assert_eq!(std::fs::metadata(&cookie).unwrap().permissions().mode() & 0o777, 0o400);
    }
    drop(std::fs::remove_dir_all(&dir));
}

#[tokio::test]
async fn each_service_gets_a_broker_user_that_can_do_its_job_and_nothing_else() {
    let guard = Private { script: "rabbitmq.sh", dir: Private::dir("rabbitmq") };
    // Inside the node's directory: the broker runs in a root of its own, which sees only that directory.
    let dir = guard.dir.join("node");
    let definitions = dir.join("definitions");
    std::fs::create_dir_all(&definitions).unwrap();
    run(
        Command::new("bash")
            .arg(children().join("rabbitmq-definitions.sh"))
            .arg(&definitions)
            .env("RABBITMQ_DEFAULT_PASS", "pw-admin-1")
            .envs(PASSWORDS.map(|(user, password)| (format!("{}_PASSWORD", user.to_uppercase()), password))),
        None,
    );
    let ports = [free_port(), free_port(), free_port()].map(|port| port.to_string());
    let status = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/rabbitmq.sh"))
        .args(["start", dir.to_str().unwrap(), &ports[0], &ports[1], &ports[2]])
        .env("RABBITMQ_EXTRA_CONF", definitions.join("analytics.conf"))
        .status()
        .unwrap();
    assert!(status.success());
    let _node = Private { script: "rabbitmq.sh", dir };
    let user = |name: &str| {
        let password = PASSWORDS.iter().find(|(user, _)| *user == name).map_or("pw-admin-1", |(_, password)| password);
        format!("amqp://{name}:{password}@127.0.0.1:{}/%2f", ports[0])
    };
    let connect = async |name: &str| analytics_kit::amqp::connect(&user(name).into(), "identities-test").await;
    let topology = Topology::default();
    let declare =
        async |channel: &lapin::Channel| analytics_kit::amqp::declare_topology(channel, &Topology::default()).await;
    let depth = async |channel: &lapin::Channel| {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        channel.queue_declare(topology.queue(Stream::Orders).into(), passive, FieldTable::default()).await.map(drop)
    };
    let consume = async |channel: &lapin::Channel| {
        let mut consumer = channel
            .basic_consume(
                topology.queue(Stream::Orders).into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let delivery = consumer.next().await.expect("a message")?;
        delivery.ack(Default::default()).await.map(drop)
    };

    // The image's default user is gone; the administrator is the operator's.
    assert!(
        analytics_kit::amqp::connect(&format!("amqp://guest:guest@127.0.0.1:{}/%2f", ports[0]).into(), "t")
            .await
            .is_err()
    );
    connect("analytics").await.unwrap();

    let command = connect("command").await.unwrap();
    allowed(&command, "command declares the topology", declare).await;
    allowed(&command, "command publishes an event", async |c| publish(c, &topology.exchange, "order.created").await)
        .await;
    let elsewhere = async |c: &lapin::Channel| {
        c.queue_declare("elsewhere".into(), QueueDeclareOptions::default(), FieldTable::default()).await.map(drop)
    };
    refused(&command, "command declares a queue of its own", elsewhere).await;

    let consumer = connect("consumer").await.unwrap();
    allowed(&consumer, "consumer declares the topology", declare).await;
    allowed(&consumer, "consumer consumes", consume).await;
    allowed(&consumer, "consumer dead-letters", async |c| {
        publish(c, &topology.dead_letter_exchange, "order.created").await
    })
    .await;
    refused(&consumer, "consumer publishes an event", async |c| publish(c, &topology.exchange, "order.created").await)
        .await;

    let query = connect("query").await.unwrap();
    allowed(&query, "query reads a depth", depth).await;
    refused(&query, "query declares the topology", declare).await;
    refused(&query, "query publishes an event", async |c| publish(c, &topology.exchange, "order.created").await).await;
    refused(&query, "query consumes", consume).await;
    let purge = async |c: &lapin::Channel| {
        c.queue_purge(topology.queue(Stream::Orders).into(), Default::default()).await.map(drop)
    };
    refused(&query, "query purges a queue", purge).await;
}
