//! TLS to PostgreSQL and RabbitMQ, against private servers of the test's own whose certificates it makes
//! with openssl (`hack/pki.sh`): a CA, a server certificate for 127.0.0.1 that it signs, and a second,
//! unrelated CA. The right CA connects, and the traffic is encrypted; the wrong CA, or a server without
//! TLS, fails the connection instead of falling back to plaintext.

#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use secrecy::SecretString;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A directory of the test's own, removed at the end, with whatever `drop` must stop first.
struct Scratch {
    dir: PathBuf,
    stops: Vec<(&'static str, PathBuf)>,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir, stops: Vec::new() }
    }

    /// `ca.crt`, `server.crt` and `server.key` for 127.0.0.1 in `tls/`, and an unrelated `other/ca.crt`.
    fn certificates(&self) -> PathBuf {
        let script = format!(
            ". '{}/hack/pki.sh'
             pki_ca '{dir}/tls' 'analytics test CA'
             pki_cert '{dir}/tls' server /CN=127.0.0.1 'subjectAltName=IP:127.0.0.1,DNS:localhost'
             pki_ca '{dir}/other' 'some other CA'
             chmod 644 '{dir}/tls/server.key'",
            repo().display(),
            dir = self.dir.display()
        );
        let status = Command::new("bash").args(["-euc", &script]).status().unwrap();
        assert!(status.success(), "openssl made the certificates");
        self.dir.join("tls")
    }

    fn run(&mut self, script: &'static str, args: &[&str], env: &[(&str, &Path)], port: Option<(&str, u16)>) {
        let mut command = Command::new(repo().join("hack").join(script));
        command.args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        if let Some((name, port)) = port {
            command.env(name, port.to_string());
        }
        assert!(command.status().unwrap().success(), "{script} {args:?}");
        self.stops.push((script, PathBuf::from(args[1])));
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for (script, dir) in self.stops.drain(..).rev() {
            drop(Command::new(repo().join("hack").join(script)).args(["stop", dir.to_str().unwrap()]).status());
        }
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

async fn ping(url: &str) -> Result<(), sqlx::Error> {
    let pool = analytics_kit::db::pool(&SecretString::from(url), 1, "tls-test")?;
    let encrypted = sqlx::query_scalar::<_, bool>("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        .fetch_one(pool.pool())
        .await;
    pool.close().await;
    assert!(encrypted?, "the session is encrypted");
    Ok(())
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server_and_never_falls_back() {
    let mut scratch = Scratch::new("postgres");
    let tls = scratch.certificates();
    let data = scratch.dir.join("postgres");
    let port = free_port();
    scratch.run("postgres.sh", &["start", data.to_str().unwrap(), &port.to_string()], &[("PG_TLS_DIR", &tls)], None);
    let base = std::fs::read_to_string(data.join("url")).unwrap();
    let password = std::fs::read_to_string(data.join("password")).unwrap();
    let ca = tls.join("ca.crt");
    let other = scratch.dir.join("other/ca.crt");

    // The right CA: the certificate and the host name verify.
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = format!("{base}/postgres?sslmode={mode}&sslrootcert={}", ca.display());
        ping(&url).await.unwrap_or_else(|error| panic!("{mode}: {error}"));
    }

    // Mutation: the wrong CA is refused, under `require` too when a root certificate is given (libpq's rule).
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = format!("{base}/postgres?sslmode={mode}&sslrootcert={}", other.display());
        let error = ping(&url).await.expect_err("a server the CA did not sign is refused");
        let text = error.to_string();
        assert!(text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"), "{mode}: {text}");
        assert!(!text.contains(password.trim()), "no password: {text}");
    }

    // Without a CA of its own, the system's roots do not know this one.
    let error = ping(&format!("{base}/postgres?sslmode=verify-full")).await.expect_err("unknown issuer");
    assert!(error.to_string().to_lowercase().contains("certificate"), "{error}");
}

#[tokio::test]
async fn postgres_that_cannot_speak_tls_is_an_error_when_tls_is_required() {
    let plain = std::env::var("TEST_DATABASE_URL").expect("run with `make test`");
    for mode in ["require", "verify-full"] {
        let error = ping(&format!("{plain}/postgres?sslmode={mode}")).await.expect_err("no plaintext fallback");
        assert!(error.to_string().contains("TLS"), "{mode}: {error}");
    }
}

#[tokio::test]
async fn rabbitmq_over_amqps_verifies_the_broker_and_never_falls_back() {
    let mut scratch = Scratch::new("rabbitmq");
    let tls = scratch.certificates();
    let node = scratch.dir.join("rabbitmq");
    let [amqp, amqps, dist, epmd] = [free_port(), free_port(), free_port(), free_port()];
    let ports = [amqp, dist, epmd].map(|port| port.to_string());
    let args = ["start", node.to_str().unwrap(), &ports[0], &ports[1], &ports[2]];
    scratch.run("rabbitmq.sh", &args, &[("RABBITMQ_TLS_DIR", &tls)], Some(("RABBITMQ_TLS_PORT", amqps)));
    let ca = tls.join("ca.crt");
    let other = scratch.dir.join("other/ca.crt");
    let url = |port: u16, ca: &Path| {
        SecretString::from(format!("amqps://guest:guest@127.0.0.1:{port}/%2f?cacertfile={}", ca.display()))
    };

    // The TLS listener opens around the same time as the plain one; give it a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let connection = loop {
        match analytics_kit::amqp::connect(&url(amqps, &ca), "tls-test").await {
            Ok(connection) => break connection,
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("not yet: {error}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => panic!("amqps with the right CA: {error}"),
        }
    };
    let channel = connection.create_channel().await.unwrap();
    let topology = analytics_events::Topology::with_prefix("tls.");
    analytics_kit::amqp::declare_topology(&channel, &topology).await.unwrap();
    connection.close(200, "done".into()).await.unwrap();

    // Mutation: the wrong CA is refused.
    let error = analytics_kit::amqp::connect(&url(amqps, &other), "tls-test").await.expect_err("wrong CA");
    assert!(!error.to_string().contains("guest:guest"), "{error}");
    // The operator's way: the right CA given as PEM stands in for the file the URL names.
    let pem = std::fs::read_to_string(&ca).unwrap();
    let trusted = analytics_kit::amqp::connect_trusting(&url(amqps, &other), "tls-test", Some(pem)).await.unwrap();
    trusted.close(200, "done".into()).await.unwrap();
    // amqps:// to the plaintext listener fails instead of talking in the clear.
    analytics_kit::amqp::connect(&url(amqp, &ca), "tls-test").await.expect_err("no plaintext fallback");
}
