CREATE PRODUCT daily WITH (compression = 'zstd(3)', partition_by = 'day', max_rows_per_file = 1000, tags = 'finance, daily')
AS SELECT CAST(at AS DATE) AS day, count(*) AS n, sum(amount) AS total FROM orders GROUP BY CAST(at AS DATE);
