-- Explodes orders_nested back to one row per item, with the item's 0-based offset.
CREATE PRODUCT order_items
ORDER BY (o_orderkey, idx)
AS
SELECT o_orderkey, idx, item['linenumber'] AS linenumber, item['partkey'] AS partkey,
       item['quantity'] AS quantity, item['price'] AS price
FROM (
  SELECT o_orderkey,
         unnest(items) AS item,
         unnest(range(0, CAST(array_length(items) AS BIGINT))) AS idx
  FROM orders_nested
);
