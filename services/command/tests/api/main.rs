//! Integration tests of the command service against a real PostgreSQL and a real RabbitMQ.
//! Run them with `make test`, which starts both; see `helpers` for what each test gets.

#![allow(clippy::unwrap_used)]

mod auth;
mod broker_outage;
mod contract;
mod database_restart;
mod helpers;
mod idempotency;
mod money;
mod ops;
mod orders;
mod products;
mod relay;
mod validation;
