-- The catalog. Money is exact (numeric), stock can never go negative, and `version` counts changes so
-- the read side's replica can ignore an update that arrives after a newer one.
create table products (
    id          bigint generated always as identity primary key,
    name        text           not null check (btrim(name) <> ''),
    category    text           not null check (btrim(category) <> ''),
    price       numeric(12, 2) not null check (price > 0),
    stock       integer        not null check (stock >= 0),
    version     bigint         not null default 1,
    created_at  timestamptz    not null default now(),
    updated_at  timestamptz    not null default now()
);
