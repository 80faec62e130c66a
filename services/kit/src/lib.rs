//! What every service shares: telemetry, the `/healthz` `/readyz` `/metrics` endpoints and HTTP metrics,
//! one JSON error shape, graceful shutdown, and the PostgreSQL and RabbitMQ connections.

pub mod amqp;
pub mod backoff;
pub mod db;
pub mod http;
pub mod shutdown;
pub mod telemetry;
