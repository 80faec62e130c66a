-- Orders and their lines. The unit price is copied from the catalog when the order is placed, so revenue
-- never depends on a later price change nor on anything the client sent.
create table orders (
    id           bigint generated always as identity primary key,
    customer_id  bigint         not null check (customer_id > 0),
    total        numeric(14, 2) not null check (total >= 0),
    created_at   timestamptz    not null
);

create index orders_customer_id on orders (customer_id);

create table order_items (
    order_id    bigint         not null references orders (id) on delete cascade,
    product_id  bigint         not null references products (id),
    quantity    integer        not null check (quantity > 0),
    unit_price  numeric(12, 2) not null check (unit_price > 0),
    primary key (order_id, product_id)
);

create index order_items_product_id on order_items (product_id);
