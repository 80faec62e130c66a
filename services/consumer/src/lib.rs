//! The consumer service: it applies order and product events from RabbitMQ to the read database's
//! analytics views, exactly once per event, and records how far it has come for sync-status.

pub mod app;
pub mod config;
pub mod consume;
pub mod projection;

pub use app::App;

/// The read database's schema, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/read");
