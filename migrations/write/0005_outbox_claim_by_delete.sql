-- The relay claims a batch by deleting it, in a transaction it commits once the broker has confirmed
-- the batch (rolled back otherwise). The table now holds exactly the events not yet published: no
-- lease, no published mark, nothing to prune, and one index to maintain on insert.
--
-- Rolling upgrade: replicas still running the lease-and-mark relay fail to claim (the columns are
-- gone) and retry with backoff until they are replaced; their order writes go on working, and the new
-- relays publish every row, including those an old relay had published but not yet marked (a
-- duplicate, absorbed by the consumer).
delete from outbox where published_at is not null;

drop index outbox_pending;
drop index outbox_published_at;
-- event_id comes from Uuid::now_v7 in the writing transaction and is never looked up: the consumer's
-- idempotency key is the body's SHA-256. Its unique index only cost a second index insert per event.
alter table outbox
    drop constraint outbox_event_id_key,
    drop column claimed_until,
    drop column published_at;

-- Every row is inserted and deleted within moments, so dead tuples pile up at the rate of orders. The
-- relay vacuums the table every few seconds; autovacuum, as the fallback, takes it after a thousand
-- dead tuples whatever its size, without throttling. Vacuum never truncates it: the empty pages are at
-- its start, and truncating takes a lock that would stall the order transactions' inserts.
alter table outbox set (
    vacuum_truncate = false,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
