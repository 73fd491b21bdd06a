-- PII pre-transform: phone and address never land in the warehouse in clear text; they are
-- HMAC-SHA256 hashed with the project secret `pii_key` (kiln.toml [secrets]).
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
  kiln_pii_hash(c_phone, key => 'pii_key') AS phone_hash,
  kiln_pii_hash(c_address, key => 'pii_key') AS address_hash,
  c_nationkey,
  c_acctbal,
  c_mktsegment
FROM customer;
