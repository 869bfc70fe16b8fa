-- Events of the site in the time range (every event type; an hour counts when it starts inside
-- the range).
SELECT sum(events) AS events
FROM site_hourly
WHERE site = ${site:sqlstring}
  AND $__timeFilter(hour)
GROUP BY site
