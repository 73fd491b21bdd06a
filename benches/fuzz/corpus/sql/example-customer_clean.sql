-- PII pre-transform: phone and address never land in the warehouse in clear text; they are
-- HMAC-SHA256 hashed with the project secret `pii_key` (kiln.toml [secrets]).
-- Constraints are checked on every staged build before it is committed (kiln test runs
-- them on the committed build).
CREATE PRODUCT customer_clean (
  c_custkey BIGINT NOT NULL PRIMARY KEY,
  c_name VARCHAR NOT NULL,
  phone_hash VARCHAR NOT NULL,
  address_hash VARCHAR NOT NULL,
  c_nationkey BIGINT NOT NULL,
  c_acctbal DECIMAL(15, 2) NOT NULL CHECK (c_acctbal BETWEEN -999.99 AND 9999.99),
  c_mktsegment VARCHAR NOT NULL
    CHECK (c_mktsegment IN ('AUTOMOBILE', 'BUILDING', 'FURNITURE', 'HOUSEHOLD', 'MACHINERY'))
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
