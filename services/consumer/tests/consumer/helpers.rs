//! The pipeline under test: write and read databases, a broker, the command service (with its relay)
//! and the query service in-process, and consumers as real processes.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use analytics_events::Topology;
use analytics_testkit::{declare, eventually, fresh_database, unique_prefix};
use command_service::config::{DatabaseConfig, RelayConfig, ServeConfig};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub struct Pipeline {
    pub write: PgPool,
    pub read: PgPool,
    pub write_url: String,
    pub read_url: String,
    pub amqp_url: String,
    pub prefix: String,
    pub topology: Topology,
    pub command: String,
    pub query: String,
    /// The /metrics URLs of the command and query services (their admin ports).
    pub service_metrics: [String; 2],
    pub client: reqwest::Client,
    pub relay_config: RelayConfig,
    /// The running consumer processes, oldest first, each with the file its log goes to.
    consumers: Vec<(Child, std::path::PathBuf)>,
    /// The /metrics URL of each running consumer, oldest first.
    pub consumer_metrics: Vec<String>,
    shutdown: CancellationToken,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for (consumer, log) in &mut self.consumers {
            drop(consumer.kill());
            drop(consumer.wait());
            drop(std::fs::remove_file(log));
        }
    }
}

impl Pipeline {
    /// Everything up, with `consumers` consumer processes. The write database keeps a copy of every
    /// event ever written in `outbox_log`, since the relay deletes what it publishes.
    pub async fn start(amqp_url: &str, consumers: usize) -> Self {
        analytics_kit::telemetry::init_for_tests();
        let write_url = fresh_database(&command_service::MIGRATOR).await;
        log_outbox_inserts(&write_url).await;
        let read_url = fresh_database(&consumer_service::MIGRATOR).await;
        let prefix = unique_prefix();
        let topology = Topology::with_prefix(&prefix);
        declare(amqp_url, &topology).await;
        let shutdown = CancellationToken::new();

        let relay_config = RelayConfig {
            amqp_url: Some(amqp_url.into()),
            topology_prefix: prefix.clone(),
            batch_size: 200,
            confirm_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(200),
        };
        let command = command_service::App::build(ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            no_relay: false,
            auth: analytics_testkit::auth_config(),
            database: DatabaseConfig { url: write_url.as_str().into(), max_connections: 24 },
            relay: relay_config.clone(),
        })
        .await
        .unwrap();
        let command_url = format!("http://127.0.0.1:{}", command.port());
        let command_metrics = format!("http://127.0.0.1:{}/metrics", command.admin_port());
        tokio::spawn(command.run(shutdown.clone()));

        let query = query_service::App::build(query_service::config::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            auth: analytics_testkit::auth_config(),
            database_url: read_url.as_str().into(),
            database_max_connections: 4,
            amqp_url: amqp_url.into(),
            topology_prefix: prefix.clone(),
        })
        .await
        .unwrap();
        let query_url = format!("http://127.0.0.1:{}", query.port());
        let query_metrics = format!("http://127.0.0.1:{}/metrics", query.admin_port());
        tokio::spawn(query.run(shutdown.clone()));

        let mut pipeline = Self {
            write: PgPool::connect(&write_url).await.unwrap(),
            read: PgPool::connect(&read_url).await.unwrap(),
            write_url,
            read_url,
            amqp_url: amqp_url.to_owned(),
            prefix,
            topology,
            command: command_url,
            query: query_url,
            service_metrics: [command_metrics, query_metrics],
            client: analytics_testkit::api_client(),
            relay_config,
            consumers: Vec::new(),
            consumer_metrics: Vec::new(),
            shutdown,
        };
        for _ in 0..consumers {
            pipeline.start_consumer();
        }
        pipeline
    }

    /// Starts one more consumer process.
    pub fn start_consumer(&mut self) {
        self.start_consumer_with_batch_size(100);
    }

    /// Starts one more consumer process that applies at most `batch_size` messages per transaction,
    /// with 200 prefetched.
    pub fn start_consumer_with_batch_size(&mut self, batch_size: usize) {
        let amqp_url = self.amqp_url.clone();
        self.spawn_consumer(batch_size, &amqp_url);
    }

    /// Starts one more consumer process that reaches the broker at `amqp_url` (through a proxy, say).
    pub fn start_consumer_through(&mut self, amqp_url: &str) {
        self.spawn_consumer(100, amqp_url);
    }

    /// Its log (JSON lines, at info level) goes to a file of its own, which `TEST_LOG` names.
    fn spawn_consumer(&mut self, batch_size: usize, amqp_url: &str) {
        let log = std::env::temp_dir().join(format!("consumer-{}.log", uuid::Uuid::new_v4().simple()));
        if std::env::var_os("TEST_LOG").is_some() {
            println!("consumer log: {}", log.display());
        }
        let file = std::fs::File::create(&log).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_consumer-service"))
            .args(["serve", "--listen", &listen, "--batch-size", &batch_size.to_string(), "--prefetch", "200"])
            .env("READ_DATABASE_URL", &self.read_url)
            .env("AMQP_URL", amqp_url)
            .env("TOPOLOGY_PREFIX", &self.prefix)
            .env("RUST_LOG", "info")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("the consumer binary starts");
        self.consumers.push((child, log));
        self.consumer_metrics.push(format!("http://{listen}/metrics"));
    }

    /// What the oldest running consumer has logged so far.
    pub fn consumer_log(&self) -> String {
        std::fs::read_to_string(&self.consumers[0].1).unwrap_or_default()
    }

    /// SIGKILLs the oldest running consumer: no shutdown, no acks, nothing finishes.
    pub fn kill_consumer(&mut self) {
        let (mut child, log) = self.consumers.remove(0);
        self.consumer_metrics.remove(0);
        child.kill().unwrap();
        child.wait().unwrap();
        drop(std::fs::remove_file(log));
    }

    /// Stops the oldest running consumer as Kubernetes stops a pod: SIGTERM, then waits for it to exit,
    /// which it must within the pod's default grace period of 30 s (else Kubernetes would SIGKILL it; the
    /// test waits a minute before it says so, the machine being shared). Returns what it logged.
    pub fn stop_consumer(&mut self) -> String {
        let (mut child, log) = self.consumers.remove(0);
        self.consumer_metrics.remove(0);
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let exited = loop {
            if let Some(exited) = child.try_wait().unwrap() {
                break exited;
            }
            if std::time::Instant::now() > deadline {
                drop(child.kill());
                drop(child.wait());
                panic!("the consumer did not exit within a minute of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        drop(std::fs::remove_file(log));
        assert!(exited.success(), "the consumer did not stop cleanly: {exited}\n{logged}");
        logged
    }

    /// Stops every consumer the hard way.
    pub fn kill_all_consumers(&mut self) {
        while !self.consumers.is_empty() {
            self.kill_consumer();
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.client.post(format!("{}{path}", self.command)).json(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn query(&self, path: &str) -> Value {
        let response = self.client.get(format!("{}{path}", self.query)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    pub async fn create_product(&self, name: &str, category: &str, price: &str, stock: i64) -> i64 {
        let price: Value = serde_json::from_str(price).unwrap();
        let body = serde_json::json!({"name": name, "category": category, "price": price, "stock": stock});
        let (status, response) = self.post("/api/products", &body).await;
        assert_eq!(status, 201, "{response}");
        response["productId"].as_i64().unwrap()
    }

    /// Waits until sync-status says in_sync: every event applied, and a fresh watermark from the relay
    /// applied on both streams (before that, sync-status rightly says "unknown").
    pub async fn wait_until_in_sync(&self, timeout: Duration) {
        eventually(timeout, "sync-status in_sync", || async {
            let status = self.query("/api/analytics/sync-status").await;
            (status["status"] == "in_sync").then_some(())
        })
        .await;
    }

    /// Runs `consumer-service <command> <args>` (verify or rebuild) against both databases, and returns its
    /// exit status and the JSON report it prints.
    pub async fn maintenance(&self, command: &str, args: &[&str]) -> (i32, Value) {
        let output = self.maintenance_command(command, args).output().await.expect("the consumer binary runs");
        let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{command} printed no JSON report ({e}): {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code().unwrap_or(-1), report)
    }

    /// Runs `consumer-service <command>` expecting no report: its exit status and what it said on stderr.
    pub async fn maintenance_refused(&self, command: &str) -> (i32, String) {
        let mut process = self.maintenance_command(command, &[]);
        process.stderr(Stdio::piped());
        let output = process.output().await.expect("the consumer binary runs");
        assert!(output.stdout.is_empty(), "{command} printed a report: {}", String::from_utf8_lossy(&output.stdout));
        (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
    }

    fn maintenance_command(&self, command: &str, args: &[&str]) -> tokio::process::Command {
        let mut process = tokio::process::Command::new(env!("CARGO_BIN_EXE_consumer-service"));
        process
            .arg(command)
            .args(["--output", "json"])
            .args(args)
            .env("READ_DATABASE_URL", &self.read_url)
            .env("WRITE_DATABASE_URL", &self.write_url)
            .stderr(if std::env::var_os("TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::piped() });
        process
    }

    /// Waits until every domain event ever written has been applied to the read model.
    pub async fn wait_until_applied(&self, timeout: Duration) {
        eventually(timeout, "every written event applied", || async {
            let written: i64 =
                sqlx::query_scalar("select count(*) from outbox_log").fetch_one(&self.write).await.unwrap();
            let applied: i64 =
                sqlx::query_scalar("select count(*) from processed_events").fetch_one(&self.read).await.unwrap();
            (written == applied).then_some(())
        })
        .await;
    }
}

/// Test instrumentation of the write database: a trigger copies every outbox row, as inserted, into
/// `outbox_log`, the history that tests compare the read model with.
async fn log_outbox_inserts(write_url: &str) {
    let pool = sqlx::PgPool::connect(write_url).await.unwrap();
    sqlx::raw_sql(
        "create table outbox_log (like outbox);
         create function log_outbox_insert() returns trigger language plpgsql as $$
           begin insert into outbox_log select new.*; return new; end $$;
         create trigger outbox_log after insert on outbox for each row execute function log_outbox_insert();",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}
