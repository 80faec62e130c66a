-- How far the read side has come, per stream (orders, products): the newest applied event's occurredAt, and the newest
-- watermark the relay sent down the queue (its time and the outbox backlog it saw). sync-status reads it.
create table sync_state (
    stream                    text primary key check (stream in ('orders', 'products')),
    last_event_occurred_at    timestamptz,
    last_event_applied_at     timestamptz,
    watermark_as_of           timestamptz,
    watermark_applied_at      timestamptz,
    outbox_pending            bigint not null default 0,
    outbox_oldest_pending_at  timestamptz
);
