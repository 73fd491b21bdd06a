CREATE PRODUCT checked (id BIGINT NOT NULL PRIMARY KEY, amount DOUBLE CHECK (amount >= 0)) AS SELECT id, amount FROM orders;
CREATE AUDIT positive ON checked AS SELECT * FROM checked WHERE amount < 0;
CREATE TEST checked_keeps_rows FOR checked
GIVEN orders AS (VALUES (1, 'a', 2.0, TIMESTAMP '2024-01-01 00:00:00', 'x'))
EXPECT (VALUES (1, 2.0));
