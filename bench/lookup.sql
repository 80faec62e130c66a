-- pgbench script: the query service's two point lookups, product sales and customer lifetime value,
-- statement for statement. `make bench` runs it on the read database with the bench's own product and
-- customer id ranges (-D product_min=… etc.) as the ceiling of the lookup phase.
\set product random(:product_min, :product_max)
\set customer random(:customer_min, :customer_max)
select total_quantity_sold, total_revenue, order_count from product_sales_view where product_id = :product;
select total_spent, order_count, last_order_at from customer_ltv_view where customer_id = :customer;
