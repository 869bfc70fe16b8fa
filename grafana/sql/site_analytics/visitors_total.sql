-- Unique visitors of the site in the time range: the cardinality of the union of every hour's and
-- event type's HyperLogLog sketch, so a visitor seen in many hours counts once (a sum of the
-- hourly counts would count them once per hour). About 2% error above a few hundred visitors.
SELECT hll_cardinality(hll_union_agg(visitors))::bigint AS visitors
FROM site_hourly
WHERE site = ${site:sqlstring}
  AND $__timeFilter(hour)
GROUP BY site
