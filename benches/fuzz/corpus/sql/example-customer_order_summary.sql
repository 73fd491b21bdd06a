-- One row per customer who ordered: order count, spend, first and last order.
CREATE PRODUCT customer_order_summary
ORDER BY (c_custkey)
AS
WITH per_customer AS (
  SELECT o_custkey, COUNT(*) AS order_count, SUM(o_totalprice) AS total_spent,
         MIN(o_orderdate) AS first_order, MAX(o_orderdate) AS last_order
  FROM orders
  GROUP BY o_custkey
)
SELECT c.c_custkey, c.c_mktsegment, c.c_nationkey, p.order_count, p.total_spent,
       p.first_order, p.last_order
FROM customer_clean c
JOIN per_customer p ON p.o_custkey = c.c_custkey;
