-- Which orders the read side has applied, for `consumer-service verify` and `rebuild`: a consistent
-- snapshot of the read database then says exactly which orders its views count (those whose hash is
-- here, and those older than the retention, whose hashes were pruned). Null for product events.
alter table processed_events add column order_id bigint;

-- The time the hash was written, not the time its transaction began: a rebuild catches up on the orders
-- applied after its snapshot by this column, so it must not lag behind the commit by a long transaction.
alter table processed_events alter column processed_at set default clock_timestamp();

-- Hashes written before this migration have no order id: orders created before it are counted as
-- applied, like those older than the retention. Null in a database that had no hashes yet.
create table order_ids_recorded (since timestamptz);
insert into order_ids_recorded select case when exists (select from processed_events) then now() end;
