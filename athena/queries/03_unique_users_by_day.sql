-- Unique anonymous users per day of receipt. Exact; on large ranges approx_distinct(anonymous_id)
-- is much cheaper (about 2% standard error).
SELECT dt, count(DISTINCT anonymous_id) AS anonymous_users
FROM events
WHERE dt BETWEEN ? AND ?
  AND anonymous_id IS NOT NULL
GROUP BY dt
ORDER BY dt
