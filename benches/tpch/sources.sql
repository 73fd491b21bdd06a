-- The three TPC-H tables the example project does not declare; the tpch suite's project
-- declares these after the example's sources.sql (data/ links to `kiln-bench tpch` output).

CREATE SOURCE part (
  p_partkey BIGINT NOT NULL,
  p_name VARCHAR NOT NULL,
  p_mfgr VARCHAR NOT NULL,
  p_brand VARCHAR NOT NULL,
  p_type VARCHAR NOT NULL,
  p_size INT NOT NULL,
  p_container VARCHAR NOT NULL,
  p_retailprice DECIMAL(15, 2) NOT NULL,
  p_comment VARCHAR NOT NULL
) WITH (connector = 'files', path = 'data/part/', format = 'parquet');

CREATE SOURCE supplier (
  s_suppkey BIGINT NOT NULL,
  s_name VARCHAR NOT NULL,
  s_address VARCHAR NOT NULL,
  s_nationkey BIGINT NOT NULL,
  s_phone VARCHAR NOT NULL,
  s_acctbal DECIMAL(15, 2) NOT NULL,
  s_comment VARCHAR NOT NULL
) WITH (connector = 'files', path = 'data/supplier/', format = 'parquet');

CREATE SOURCE partsupp (
  ps_partkey BIGINT NOT NULL,
  ps_suppkey BIGINT NOT NULL,
  ps_availqty INT NOT NULL,
  ps_supplycost DECIMAL(15, 2) NOT NULL,
  ps_comment VARCHAR NOT NULL
) WITH (connector = 'files', path = 'data/partsupp/', format = 'parquet');
