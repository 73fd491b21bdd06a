CREATE MATERIALIZED VIEW t AS
SELECT window_start, window_end, count(*) AS n FROM TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND)
GROUP BY window_start, window_end;
CREATE MATERIALIZED VIEW h AS
SELECT window_start, sum(amount) AS s FROM HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '1' SECOND, INTERVAL '5' SECOND) GROUP BY window_start;
