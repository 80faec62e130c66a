//! Integration tests of the query service against a real PostgreSQL read database, fed through the
//! consumer's own projection. Run them with `make test`.

#![allow(clippy::unwrap_used)]

mod analytics;
mod contract;
mod helpers;
