-- The transactional outbox: every write inserts its domain event here in the same transaction, and the
-- relay publishes it afterwards. `body` holds the exact bytes that go on the wire (json keeps text as
-- given, unlike jsonb), so a republished event has the same SHA-256 and the consumer sees a duplicate.
create table outbox (
    id             bigint generated always as identity primary key,
    event_id       uuid        not null unique,
    event_type     text        not null,
    aggregate_id   bigint      not null,
    body           json        not null,
    occurred_at    timestamptz not null,
    -- A relay that claims a row leases it until then; a crashed relay's rows come back when it expires.
    claimed_until  timestamptz,
    published_at   timestamptz
);

-- The relay's work queue: only unpublished rows, in id order.
create index outbox_pending on outbox (id) where published_at is null;

-- Pruning published rows after the retention period.
create index outbox_published_at on outbox (published_at) where published_at is not null;
