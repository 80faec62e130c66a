-- Per UTC hour of the order time (not of processing time): orders, units sold and revenue.
create table hourly_sales_view (
    hour         timestamptz primary key check (date_trunc('hour', hour, 'UTC') = hour),
    order_count  bigint         not null,
    items_sold   bigint         not null,
    revenue      numeric(20, 2) not null,
    updated_at   timestamptz    not null default now()
);
