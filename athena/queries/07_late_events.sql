-- Late events: how long after the client's occurred_at the server received them. Offline
-- clients and retries show up in the later buckets. occurred_at is corrected for the client's
-- clock when the client sent `sent_at` (the client's own value is original_occurred_at), so a
-- negative delay is a client clock ahead that sent no sent_at, or network latency.
-- The buckets are by receive partition, so old events are found where they arrived.
SELECT CASE
           WHEN occurred_at > received_at THEN '0 client clock ahead'
           WHEN received_at - occurred_at < INTERVAL '1' MINUTE THEN '1 under a minute'
           WHEN received_at - occurred_at < INTERVAL '1' HOUR THEN '2 under an hour'
           WHEN received_at - occurred_at < INTERVAL '1' DAY THEN '3 under a day'
           ELSE '4 a day or more'
       END AS lateness,
       count(DISTINCT event_id) AS events,
       max(to_unixtime(received_at) - to_unixtime(occurred_at)) AS max_delay_seconds
FROM events
WHERE dt BETWEEN ? AND ?
GROUP BY 1
ORDER BY 1
