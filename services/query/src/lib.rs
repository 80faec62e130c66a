//! The query service: analytics from the read database only, plus sync-status, which tells how far the
//! read model is behind the write side.

pub mod app;
pub mod config;
pub mod http;
pub mod read_model;
pub mod sync;

pub use app::App;
