-- A replica of the catalog, fed by ProductCreated and ProductUpdated. Events from one product can arrive
-- out of order (redeliveries, competing consumers), so a row only ever moves to a higher version.
create table products (
    id          bigint primary key,
    name        text           not null,
    category    text           not null,
    price       numeric(12, 2) not null,
    version     bigint         not null,
    updated_at  timestamptz    not null default now()
);

create index products_category on products (category);
