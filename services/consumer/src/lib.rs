//! The consumer service: it applies order and product events from RabbitMQ to the read database's
//! analytics views, exactly once per event, and records how far it has come for sync-status. Its
//! `verify` and `rebuild` commands compare the views with the write database's history and build them
//! afresh from it, online.

pub mod app;
pub mod config;
pub mod consume;
pub mod cut;
pub mod projection;
pub mod rebuild;
pub mod verify;
pub mod views;

pub use app::App;

/// The read database's schema, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/read");
