-- Events per hour of occurrence, one series per event type (stacked: the top of the stack is the
-- hour's total).
SELECT hour AS "time", event_type AS metric, events
FROM site_hourly
WHERE site = ${site:sqlstring}
  AND $__timeFilter(hour)
ORDER BY 1, 2
