-- Per product: Σ quantity, Σ quantity × unit price, and the number of distinct orders containing it
-- (an order lists a product at most once, so each OrderCreated adds 1). Name and category come from the
-- order event, so sales never wait for the product events, which travel on another queue.
create table product_sales_view (
    product_id           bigint primary key,
    product_name         text           not null,
    category             text           not null,
    total_quantity_sold  bigint         not null,
    total_revenue        numeric(20, 2) not null,
    order_count          bigint         not null,
    updated_at           timestamptz    not null default now()
);

create index product_sales_view_revenue on product_sales_view (total_revenue desc, product_id);
create index product_sales_view_quantity on product_sales_view (total_quantity_sold desc, product_id);
