-- Each order with its line items as a list<struct>, in line-number order.
CREATE PRODUCT orders_nested
ORDER BY (o_orderkey)
AS
SELECT
  o.o_orderkey,
  o.o_orderdate,
  array_agg(struct(l.l_linenumber AS linenumber, l.l_partkey AS partkey,
                   l.l_quantity AS quantity, l.l_extendedprice AS price)
            ORDER BY l.l_linenumber) AS items
FROM orders o
JOIN lineitem l ON l.l_orderkey = o.o_orderkey
GROUP BY o.o_orderkey, o.o_orderdate;
