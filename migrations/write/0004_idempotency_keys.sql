-- Idempotency-Key (POST /api/orders, POST /api/products): the first request with a key claims it in its
-- own transaction and stores its response there, so the key exists exactly when the write does. A retry
-- with the same key and request gets that response back; a different request with the key is refused.
-- `scope` is the client (the bearer token it authenticated with), so clients cannot collide.
create table idempotency_keys (
    scope         text        not null,
    key           text        not null,
    -- SHA-256 of the route and the request, in canonical JSON.
    request_hash  bytea       not null,
    response      jsonb,
    created_at    timestamptz not null default now(),
    primary key (scope, key)
);

-- Pruning keys after the retention period.
create index idempotency_keys_created_at on idempotency_keys (created_at);
