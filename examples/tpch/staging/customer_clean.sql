-- PII pre-transform: phone and address never land in the warehouse in clear text.
CREATE PRODUCT customer_clean (
  c_custkey BIGINT NOT NULL,
  c_name VARCHAR NOT NULL,
  phone_hash VARCHAR NOT NULL,
  address_hash VARCHAR NOT NULL,
  c_nationkey BIGINT NOT NULL,
  c_acctbal DECIMAL(15, 2) NOT NULL,
  c_mktsegment VARCHAR NOT NULL
)
ORDER BY (c_custkey)
AS
SELECT
  c_custkey,
  c_name,
  encode(sha256(c_phone), 'hex') AS phone_hash,
  encode(sha256(c_address), 'hex') AS address_hash,
  c_nationkey,
  c_acctbal,
  c_mktsegment
FROM customer;
