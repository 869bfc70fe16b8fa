-- Events per type per hour of receipt.
-- The lake is partitioned by receive time: dt = 'YYYY-MM-DD' and hour = 'HH' (strings, UTC).
-- Bind the two parameters (first and last day, inclusive) as execution parameters; the dt
-- predicate is what lets partition projection read only those days.
-- count(DISTINCT event_id) rather than count(*): while the compactor swaps an hour's files a
-- query may see a row twice (athena/README.md, "Compaction"); DISTINCT hides that.
SELECT dt, hour, event_type, count(DISTINCT event_id) AS events
FROM events
WHERE dt BETWEEN ? AND ?
GROUP BY dt, hour, event_type
ORDER BY dt, hour, event_type
