-- Per customer and category: revenue, units, and the number of distinct orders with at least one item
-- in the category (an order with two items of one category counts once). Added after the others: a
-- read database migrated to it holds only the orders applied since, until `consumer-service rebuild`
-- fills it from the write database's history.
create table customer_category_view (
    customer_id     bigint         not null,
    category        text           not null,
    total_revenue   numeric(20, 2) not null,
    total_quantity  bigint         not null,
    order_count     bigint         not null,
    updated_at      timestamptz    not null default now(),
    primary key (customer_id, category)
);
