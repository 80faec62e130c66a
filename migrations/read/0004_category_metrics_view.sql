-- Per category: revenue, units, and the number of distinct orders with at least one item in it (an
-- order with two items of one category counts once).
create table category_metrics_view (
    category        text primary key,
    total_revenue   numeric(20, 2) not null,
    total_quantity  bigint         not null,
    total_orders    bigint         not null,
    updated_at      timestamptz    not null default now()
);
