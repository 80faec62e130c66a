//! RabbitMQ connections and the idempotent declaration of the pipeline's topology.

use analytics_events::{Stream, Topology};
use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    tcp::OwnedTLSConfig,
    types::{AMQPValue, FieldTable, LongString},
    uri::{AMQPScheme, AMQPUri},
};
use secrecy::{ExposeSecret, SecretString};

/// How long closing a connection may wait for the broker's answer; one that does not answer is dropped
/// (the broker sees the socket close, and requeues what the connection had unacked).
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long opening a connection may take, TCP, TLS and the AMQP handshake together: a broker that
/// accepts the socket and then says nothing (one still booting, or behind a dead path) is given up on,
/// and the caller tries again, instead of waiting for good.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a client's whole set-up may take: the connection, then its channels, topology and consumers
/// or confirm mode. A broker that accepts and then does not answer is tried again, not waited for.
pub const SET_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Closes `channels`, then `connection`, waiting at most [`CLOSE_TIMEOUT`] in all for the broker: one
/// that stopped answering must not hold a service's stop. Each channel is closed and its close
/// acknowledged first: a channel left to close with the connection (or dropped, which closes it in the
/// background) races the connection's close, and lapin reports that as a connection error.
pub async fn close(connection: &Connection, channels: &[&Channel], reason: &str) {
    let closing = async {
        let open = channels.iter().filter(|channel| channel.status().connected());
        futures::future::join_all(open.map(|channel| channel.close(200, reason.into()))).await;
        connection.close(200, reason.into()).await
    };
    drop(tokio::time::timeout(CLOSE_TIMEOUT, closing).await);
}

/// Opens a connection that names itself in the broker's management views.
///
/// `amqps://` speaks TLS and verifies the broker's certificate and name against the system's roots,
/// plus the PEM certificates of the file that the `cacertfile` query parameter names (RabbitMQ's URI
/// parameter, e.g. `amqps://user:pw@mq.internal/%2f?cacertfile=/etc/analytics/ca.crt`). A certificate
/// that does not verify fails the connection; nothing falls back to plaintext. `cacertfile` on a plain
/// `amqp://` URL is refused rather than ignored.
///
/// A URL that does not parse is refused without repeating it: the parser's own message quotes the
/// whole URL, password included, and errors end up in logs.
pub async fn connect(url: &SecretString, connection_name: &str) -> lapin::Result<Connection> {
    connect_trusting(url, connection_name, None).await
}

/// [`connect`], trusting the PEM certificates `ca` instead of the URL's `cacertfile`: for a client that
/// reads the CA bundle from elsewhere than the file the URL names (the operator, from the Secret that
/// the services mount).
pub async fn connect_trusting(
    url: &SecretString,
    connection_name: &str,
    ca: Option<String>,
) -> lapin::Result<Connection> {
    let invalid = |message: String| lapin::Error::from(std::io::Error::new(std::io::ErrorKind::InvalidInput, message));
    let uri: AMQPUri = url.expose_secret().parse().map_err(|_| {
        invalid(
            "the AMQP URL does not parse (amqp[s]://USER:PASSWORD@HOST:PORT/VHOST expected; not shown, as it may hold a password)"
                .to_owned(),
        )
    })?;
    let ca_file = ca_file(url.expose_secret());
    if uri.scheme == AMQPScheme::AMQP && ca_file.is_some() {
        return Err(invalid("cacertfile is a TLS setting, but the AMQP URL is amqp://: use amqps://".to_owned()));
    }
    let ca = match (ca, ca_file) {
        (Some(pem), _) => Some(pem),
        (None, Some(path)) => Some(
            std::fs::read_to_string(&path)
                .map_err(|error| invalid(format!("cannot read the broker's CA file {path}: {error}")))?,
        ),
        (None, None) => None,
    };
    let tls = OwnedTLSConfig { identity: None, cert_chain: ca };
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    let connecting = Connection::connect_uri_with_config(uri, properties, tls, lapin::runtime::default_runtime()?);
    tokio::time::timeout(CONNECT_TIMEOUT, connecting).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the broker did not complete the connection within {CONNECT_TIMEOUT:?}"),
        )
        .into())
    })
}

/// The `cacertfile` query parameter of an AMQP URL.
fn ca_file(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    url.query_pairs().find(|(name, _)| name == "cacertfile").map(|(_, value)| value.into_owned())
}

/// Declares exchanges, queues and bindings. Safe to run any number of times, from any service, at
/// start-up and after every reconnect: a declaration of what exists already is a no-op.
///
/// `order-events` and `product-events` are durable quorum queues. A message that is rejected, or that
/// is redelivered more than [`Topology::DELIVERY_LIMIT`] times, moves to the dead-letter queue instead
/// of blocking its queue.
pub async fn declare_topology(channel: &Channel, topology: &Topology) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel
        .exchange_declare(topology.exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
        .await?;
    channel
        .exchange_declare(
            topology.dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;

    let durable_queue = QueueDeclareOptions { durable: true, ..Default::default() };
    let mut dead_letter_args = FieldTable::default();
    dead_letter_args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    channel.queue_declare(topology.dead_letter_queue.as_str().into(), durable_queue, dead_letter_args).await?;
    channel
        .queue_bind(
            topology.dead_letter_queue.as_str().into(),
            topology.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    for stream in Stream::ALL {
        let queue = topology.queue(stream);
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(topology.dead_letter_exchange.as_str())),
        );
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(Topology::DELIVERY_LIMIT));
        channel.queue_declare(queue.into(), durable_queue, args).await?;
        channel
            .queue_bind(
                queue.into(),
                topology.exchange.as_str().into(),
                stream.binding().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_url_that_does_not_parse_is_refused_without_its_password() {
        for url in [
            "amqp:analytics:s3cret-pw@broker:5672/%2f",
            "amqp://analytics:s3cret-pw@broker:notaport/%2f",
            "amqps//analytics:s3cret-pw@broker",
            "s3cret-pw",
        ] {
            let error = connect(&url.into(), "test").await.expect_err("a bad URL is refused");
            let text = format!("{error} {error:?}");
            assert!(!text.contains("s3cret-pw"), "{url}: {text}");
            assert!(text.contains("does not parse"), "{text}");
        }
    }

    #[tokio::test]
    async fn a_ca_file_is_for_amqps_only_and_must_be_readable() {
        let plain = connect(&"amqp://analytics:s3cret-pw@127.0.0.1:1/%2f?cacertfile=/etc/ca.crt".into(), "test").await;
        let text = plain.expect_err("refused").to_string();
        assert!(text.contains("use amqps://") && !text.contains("s3cret-pw"), "{text}");
        let missing =
            connect(&"amqps://analytics:s3cret-pw@127.0.0.1:1/%2f?cacertfile=/nonexistent/ca.crt".into(), "test").await;
        let text = missing.expect_err("refused").to_string();
        assert!(text.contains("/nonexistent/ca.crt") && !text.contains("s3cret-pw"), "{text}");
        // A CA given directly stands in for the file: the attempt goes as far as the (closed) port.
        let url = "amqps://analytics:s3cret-pw@127.0.0.1:1/%2f?cacertfile=/nonexistent/ca.crt".into();
        let given = connect_trusting(&url, "test", Some(String::new())).await;
        let text = given.expect_err("nothing listens on port 1").to_string();
        assert!(!text.contains("/nonexistent/ca.crt"), "{text}");
    }
}
