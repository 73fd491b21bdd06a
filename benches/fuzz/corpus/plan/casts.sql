CREATE PRODUCT casts AS SELECT CAST(CAST(CAST(id AS VARCHAR) AS BIGINT) AS DOUBLE) AS d,
id::DECIMAL(10, 2) AS dec, TRY_CAST(customer AS INT) AS n, 1 + 2 * 3 - -4 / 5 % 6 AS e,
NOT (id > 1 AND id < 5 OR id IS NULL) AS b, 'it''s' AS s, /* comment */ -- line
ARRAY[1, 2, 3] AS a, {'x': 1, 'y': 'z'} AS st, map(['a'], [1]) AS m
FROM orders;
