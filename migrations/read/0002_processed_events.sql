-- Idempotency: the SHA-256 of every applied message body, written in the same transaction as the view
-- changes it caused. A redelivered message finds its hash here and changes nothing.
create table processed_events (
    hash          bytea       primary key check (length(hash) = 32),
    event_type    text        not null,
    processed_at  timestamptz not null default now()
);

-- Pruning hashes older than any possible redelivery.
create index processed_events_processed_at on processed_events (processed_at);
