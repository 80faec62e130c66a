//! Integration tests of the consumer against a real PostgreSQL and RabbitMQ: the projection's
//! guarantees, poison messages, and the whole pipeline with the consumer as a real process (so it can
//! be SIGKILLed) between an in-process command service and query service. Run them with `make test`.

#![allow(clippy::unwrap_used)]

mod helpers;
mod infrastructure;
mod maintenance;
mod pipeline;
mod poison;
mod projection;
mod pruning;
mod restarts;
mod sync_status;
