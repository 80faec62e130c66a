-- Stock is at most 1 000 000 000 units, as the API documents for a product's stock and for one addStock:
-- a change that would take it past that is refused (422), as one that would overflow the column was.
-- NOT VALID: rows already beyond it (possible before this rule) are not scanned or refused; every write
-- from now on is checked, and a product beyond the cap can only go down.
alter table products add constraint products_stock_at_most_a_billion check (stock <= 1000000000) not valid;
