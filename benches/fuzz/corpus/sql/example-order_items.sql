-- Explodes orders_nested back to one row per item, with the item's 0-based offset
-- (Kiln's UNNEST: WITH OFFSET keeps the element index that plain `unnest` loses).
CREATE PRODUCT order_items
ORDER BY (o_orderkey, idx)
AS
SELECT o.o_orderkey, idx, item['linenumber'] AS linenumber, item['partkey'] AS partkey,
       item['quantity'] AS quantity, item['price'] AS price
FROM orders_nested o
CROSS JOIN UNNEST(o.items) WITH OFFSET AS i(item, idx);
