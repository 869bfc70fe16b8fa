-- Unique visitors per hour: the union of the hour's sketches over all event types (a visitor who
-- viewed a page and then purchased is one visitor, not two).
SELECT hour AS "time", hll_cardinality(hll_union_agg(visitors))::bigint AS visitors
FROM site_hourly
WHERE site = ${site:sqlstring}
  AND $__timeFilter(hour)
GROUP BY hour
ORDER BY 1
