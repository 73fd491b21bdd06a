-- Third level of the DAG: customer value by market segment and nation.
CREATE PRODUCT segment_value
ORDER BY (c_mktsegment, nation)
AS
SELECT s.c_mktsegment, n.n_name AS nation, COUNT(*) AS customers,
       SUM(s.total_spent) AS total_spent, AVG(s.order_count) AS avg_orders
FROM customer_order_summary s
JOIN nation n ON s.c_nationkey = n.n_nationkey
GROUP BY s.c_mktsegment, n.n_name;
