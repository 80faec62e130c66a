//! The command service: it takes products and orders, writes them to the write database together with
//! their domain events in the `outbox` table, and relays those events to RabbitMQ.

pub mod app;
pub mod config;
pub mod domain;
pub mod http;
pub mod outbox;
pub mod store;

pub use app::App;

/// The write database's schema, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/write");
