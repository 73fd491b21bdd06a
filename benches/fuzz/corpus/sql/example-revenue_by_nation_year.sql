-- Revenue (extended price net of discount) per nation, region and order year,
-- written as one Hive directory per region (region=AFRICA/, region=AMERICA/, ...).
CREATE PRODUCT revenue_by_nation_year (
  region VARCHAR NOT NULL,
  nation VARCHAR NOT NULL,
  order_year INT NOT NULL,
  orders BIGINT NOT NULL CHECK (orders > 0),
  revenue DECIMAL(38, 4),
  UNIQUE (nation, order_year)
)
PARTITIONED BY (region)
ORDER BY (region, nation, order_year)
AS
SELECT
  r.r_name AS region,
  n.n_name AS nation,
  CAST(date_part('year', o.o_orderdate) AS INT) AS order_year,
  COUNT(DISTINCT o.o_orderkey) AS orders,
  SUM(l.l_extendedprice * (1 - l.l_discount)) AS revenue
FROM lineitem l
JOIN orders o ON l.l_orderkey = o.o_orderkey
JOIN customer_clean c ON o.o_custkey = c.c_custkey
JOIN nation n ON c.c_nationkey = n.n_nationkey
JOIN region r ON n.n_regionkey = r.r_regionkey
GROUP BY r.r_name, n.n_name, CAST(date_part('year', o.o_orderdate) AS INT);
