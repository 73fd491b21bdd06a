CREATE PRODUCT report AS
WITH t AS (SELECT id, amount FROM totals WHERE amount > 1), h AS (SELECT id, c FROM hashed)
SELECT t.id, h.c, CASE WHEN t.amount > 10 THEN 'big' ELSE 'small' END AS size,
row_number() OVER (PARTITION BY h.c ORDER BY t.amount DESC) AS rank
FROM t JOIN h USING (id) WHERE t.id IN (SELECT id FROM orders WHERE customer LIKE 'a%') ORDER BY t.id LIMIT 10;
