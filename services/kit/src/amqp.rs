//! RabbitMQ connections and the idempotent declaration of the pipeline's topology.

use analytics_events::{Stream, Topology};
use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
    uri::{AMQPScheme, AMQPUri},
};
use secrecy::{ExposeSecret, SecretString};

/// Opens a connection that names itself in the broker's management views.
///
/// A URL that does not parse is refused without repeating it: the parser's own message quotes the
/// whole URL, password included, and errors end up in logs.
pub async fn connect(url: &SecretString, connection_name: &str) -> lapin::Result<Connection> {
    let uri: AMQPUri = url.expose_secret().parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the AMQP URL does not parse (amqp://USER:PASSWORD@HOST:PORT/VHOST expected; not shown, as it may hold a password)",
        )
    })?;
    // This build has no TLS stack: a request for TLS is refused, never quietly served in plaintext.
    if uri.scheme == AMQPScheme::AMQPS {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "amqps:// asks for TLS, which this build does not speak: refused rather than sending the password in the clear",
        )
        .into());
    }
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    Connection::connect_uri(uri, properties).await
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
    async fn a_tls_url_is_refused_not_downgraded() {
        let error = connect(&"amqps://analytics:s3cret-pw@127.0.0.1:1/%2f".into(), "test").await.expect_err("refused");
        let text = error.to_string();
        assert!(text.contains("TLS") && !text.contains("s3cret-pw"), "{text}");
    }
}
