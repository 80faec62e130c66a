-- pgbench script: the command service's order transaction, statement for statement, for two products.
-- `make bench` runs it against a scratch copy of the write schema to measure PostgreSQL's ceiling, once
-- as it is and once without its last insert (the outbox row), the bare transaction.
\set a random(1, 500)
\set b 1 + (:a % 500)
\set customer random(1, 100000)
begin;
select id, name, category, price, stock from products where id = any(array[:a, :b]::bigint[]) order by id for update;
with stock as (
    update products p set stock = p.stock - l.quantity
      from unnest(array[least(:a, :b), greatest(:a, :b)]::bigint[], array[1, 2]::int[]) as l(id, quantity)
     where p.id = l.id
), new_order as (
    insert into orders (customer_id, total, created_at) values (:customer, 30.00, now()) returning id
), lines as (
    insert into order_items (order_id, product_id, quantity, unit_price)
    select new_order.id, l.id, l.quantity, l.price
      from new_order, unnest(array[least(:a, :b), greatest(:a, :b)]::bigint[], array[1, 2]::int[], array[10.00, 10.00]::numeric[]) as l(id, quantity, price)
)
select id from new_order;
insert into outbox (event_id, event_type, aggregate_id, body, occurred_at)
values (gen_random_uuid(), 'OrderCreated', :customer,
        '{"eventId":"0193a5d6-7f1e-7c3a-9a51-0d8f0c1e2b3c","eventType":"OrderCreated","schemaVersion":1,"occurredAt":"2026-11-24T06:30:00.123Z","aggregateId":1,"payload":{"orderId":1,"customerId":42,"orderedAt":"2026-11-24T06:30:00.123Z","total":30,"items":[{"productId":1,"productName":"Bench product 1","category":"Category 1","unitPrice":10,"quantity":1},{"productId":2,"productName":"Bench product 2","category":"Category 2","unitPrice":10,"quantity":2}]}}'::json,
        now());
commit;
