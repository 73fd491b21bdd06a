-- Order events arriving on the embedded log, and the materialized views `kiln stream`
-- keeps up to date from them (README.md, "Streams"):
--   kiln produce order_events < streams/order_events.ndjson
--   kiln stream --until-idle
CREATE STREAM order_events (
  order_id BIGINT NOT NULL,
  customer_id BIGINT NOT NULL,
  status VARCHAR NOT NULL,
  amount DECIMAL(12, 2),
  event_time TIMESTAMP(3) NOT NULL,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (connector = 'log', topic = 'order_events', on_error = 'reject');

-- Events and revenue per status in one-minute windows, each emitted once when the
-- watermark passes its end; late events go to revenue_per_minute__late.
CREATE MATERIALIZED VIEW revenue_per_minute WITH (late_events = 'table') AS
SELECT TUMBLE_START(event_time, INTERVAL '1' MINUTE) AS window_start,
       TUMBLE_END(event_time, INTERVAL '1' MINUTE) AS window_end,
       status,
       count(*) AS events,
       sum(amount) AS revenue
FROM order_events
GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), status;

-- Distinct customers over the last five minutes, every minute.
CREATE MATERIALIZED VIEW active_customers AS
SELECT HOP_START(event_time, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS window_start,
       count(DISTINCT customer_id) AS customers,
       count(*) AS events
FROM order_events
GROUP BY HOP(event_time, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE);

-- Large orders as they happen (no window: every micro-batch appends), customer hashed.
CREATE MATERIALIZED VIEW large_orders AS
SELECT order_id,
       kiln_pii_hash(CAST(customer_id AS VARCHAR), key => 'pii_key') AS customer_hash,
       status,
       amount,
       event_time
FROM order_events
WHERE amount >= 1000;
