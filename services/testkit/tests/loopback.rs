//! `make up` and `make test` run PostgreSQL and RabbitMQ through hack/postgres.sh and hack/rabbitmq.sh,
//! and the README says that everything they start listens on 127.0.0.1. Every listening socket of a
//! private node, Erlang distribution and epmd included, is checked in the kernel's socket tables.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use analytics_testkit::PrivateBroker;

/// The local addresses of the listening TCP sockets on `port`, as `/proc/net/tcp{,6}` spell them.
fn listeners(port: u16) -> BTreeSet<String> {
    let mut addresses = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state) = (fields[1], fields[3]);
            let (address, local_port) = local.rsplit_once(':').unwrap();
            // 0A is LISTEN.
            if state == "0A" && u16::from_str_radix(local_port, 16).unwrap() == port {
                addresses.insert(address.to_owned());
            }
        }
    }
    addresses
}

#[test]
fn a_private_rabbitmq_listens_on_loopback_only() {
    let broker = PrivateBroker::start();
    let ports = broker.ports();
    // 127.0.0.1 (little-endian hex in /proc/net/tcp) and ::1; never 0.0.0.0 or ::.
    let loopback = BTreeSet::from(["0100007F".to_owned(), "00000000000000000000000001000000".to_owned()]);
    for (name, port) in [("AMQP", ports[0]), ("Erlang distribution", ports[1]), ("epmd", ports[2])] {
        let bound = listeners(port);
        assert!(!bound.is_empty(), "nothing listens on the {name} port {port}");
        assert!(bound.is_subset(&loopback), "the {name} port {port} listens on {bound:?}");
    }
}
