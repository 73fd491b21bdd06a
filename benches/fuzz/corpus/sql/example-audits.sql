-- Audits: queries whose rows are failures, run on each staged build before it commits.

-- Error level (the default): a build with a non-positive revenue is never published.
CREATE AUDIT revenue_is_positive ON revenue_by_nation_year
AS SELECT * FROM revenue_by_nation_year WHERE revenue <= 0;

-- Warn level: reported (and kept in customer_order_summary__failures), never blocking.
-- Customers whose last order is before 1998 (the TPC-H data ends in August 1998).
CREATE AUDIT dormant_customers ON customer_order_summary
WITH (severity = 'warn')
AS SELECT c_custkey, last_order FROM customer_order_summary WHERE last_order < DATE '1998-01-01';
