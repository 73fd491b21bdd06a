CREATE SOURCE more (a INT, b VARCHAR NOT NULL, c TIMESTAMP(6), d DECIMAL(38, 10), e DATE, f BOOLEAN, g BIGINT[])
WITH (connector = 'files', path = 'data/more/', format = 'parquet', partitioned_by = 'year', schema_evolution = 'add_columns', freshness = '1d');
CREATE SOURCE web WITH (connector = 'http', url = 'http://127.0.0.1:9/x', format = 'json', poll_interval = '1s', paging = 'cursor');
CREATE STREAM clicks (at TIMESTAMP(3) NOT NULL, page VARCHAR, WATERMARK FOR at AS at - INTERVAL '5' SECOND)
WITH (connector = 'files', path = 'data/clicks/', format = 'json', on_error = 'reject', batch_records = '100');
