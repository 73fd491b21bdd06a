CREATE PRODUCT tags AS
SELECT o.id, t.tag, t.pos FROM orders o CROSS JOIN UNNEST(string_to_array(o.tags, '|')) WITH OFFSET AS t(tag, pos);
CREATE PRODUCT nested AS SELECT customer, array_agg(struct(id, amount) ORDER BY id) AS items FROM orders GROUP BY customer;
