-- Per customer: Σ order totals, number of orders, first and latest order time.
create table customer_ltv_view (
    customer_id      bigint primary key,
    total_spent      numeric(20, 2) not null,
    order_count      bigint         not null,
    first_order_at   timestamptz    not null,
    last_order_at    timestamptz    not null,
    updated_at       timestamptz    not null default now()
);
