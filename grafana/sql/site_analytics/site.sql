-- The sites that have events in the time range, for the `site` variable. The empty site '' holds
-- events recorded before sites existed (migration 0004): it is no owner's site, so it is not offered.
SELECT DISTINCT site
FROM site_hourly
WHERE $__timeFilter(hour)
  AND site <> ''
ORDER BY site
