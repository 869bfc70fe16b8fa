-- Unique visitors and events per site and day of receipt. A visitor is user_id when the event has
-- one, else anonymous_id (as in PostgreSQL's site_hourly); events with neither are counted but
-- are nobody. approx_distinct is HyperLogLog (2.3% standard error) and ignores a row seen twice.
-- Events recorded before sites have no site and are left out.
SELECT site,
       dt,
       count(DISTINCT event_id) AS events,
       approx_distinct(coalesce(user_id, anonymous_id)) AS visitors
FROM events
WHERE dt BETWEEN ? AND ?
  AND site IS NOT NULL
GROUP BY site, dt
ORDER BY site, dt
