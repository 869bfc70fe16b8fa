-- Event types in the time range: events, their share of all events, and the unique visitors who
-- sent each type (the union of its hourly sketches).
SELECT event_type,
       sum(events) AS events,
       round(sum(events) / sum(sum(events)) OVER (), 4) AS share,
       hll_cardinality(hll_union_agg(visitors))::bigint AS visitors
FROM site_hourly
WHERE site = ${site:sqlstring}
  AND $__timeFilter(hour)
GROUP BY event_type
ORDER BY events DESC, event_type
