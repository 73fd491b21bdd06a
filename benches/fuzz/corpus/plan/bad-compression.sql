CREATE PRODUCT p WITH (compression = 'zstd(3)ß') AS SELECT 1 AS x;
