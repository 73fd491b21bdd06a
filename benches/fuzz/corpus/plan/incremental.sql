CREATE PRODUCT by_day WITH (incremental = 'by_interval', interval_column = 'day', interval = 'day', start = '2024-01-01')
AS SELECT CAST(at AS DATE) AS day, sum(amount) AS total FROM orders WHERE at >= $start AND at < $end GROUP BY 1;
CREATE PRODUCT merged WITH (incremental = 'by_unique_key', unique_key = 'id') AS SELECT id, amount FROM orders;
