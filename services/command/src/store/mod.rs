//! The write database's SQL. Handlers decide; these functions only read and write rows, inside the
//! caller's transaction where a change must commit together with its outbox event.

pub mod idempotency;
pub mod orders;
pub mod products;
