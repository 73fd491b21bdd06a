-- Unit tests: a product's query on fixture rows, in memory (`kiln test`).

-- Orders of a customer missing from customer_clean (99) are dropped by the join; a
-- customer without orders (30) has no row.
CREATE TEST summary_per_customer FOR customer_order_summary
GIVEN (
  orders AS (VALUES
    (1, 10, 'F', 100.00, DATE '1995-01-02', '1-URGENT', 'Clerk#1', 0, ''),
    (2, 10, 'O', 50.50, DATE '1996-03-04', '2-HIGH', 'Clerk#1', 0, ''),
    (3, 20, 'F', 7.25, DATE '1994-06-07', '3-MEDIUM', 'Clerk#2', 0, ''),
    (4, 99, 'F', 1.00, DATE '1993-01-01', '5-LOW', 'Clerk#3', 0, '')),
  customer_clean FROM 'tests/fixtures/customer_clean.csv'
)
EXPECT (VALUES
  (10, 'BUILDING', 7, 2, 150.50, DATE '1995-01-02', DATE '1996-03-04'),
  (20, 'MACHINERY', 3, 1, 7.25, DATE '1994-06-07', DATE '1994-06-07'));

CREATE TEST segment_value_per_nation FOR segment_value
GIVEN (
  customer_order_summary AS (VALUES
    (1, 'BUILDING', 7, 2, 150.50, DATE '1995-01-02', DATE '1996-03-04'),
    (2, 'BUILDING', 7, 4, 10.00, DATE '1992-01-01', DATE '1998-01-01'),
    (3, 'MACHINERY', 3, 1, 7.25, DATE '1994-06-07', DATE '1994-06-07')),
  nation AS (VALUES (7, 'GERMANY', 3, ''), (3, 'CANADA', 1, ''))
)
EXPECT (VALUES ('BUILDING', 'GERMANY', 2, 160.50, 3.0), ('MACHINERY', 'CANADA', 1, 7.25, 1.0));
