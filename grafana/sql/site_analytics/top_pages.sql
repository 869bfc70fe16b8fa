-- The 20 most viewed pages in the time range, widened to whole UTC days (pages are kept per day):
-- page views (page_view events), all events on the page, and unique visitors (the union of the
-- days' sketches). Paths are the URL's path without query string or fragment; events without a
-- URL ('') are left out.
SELECT path AS page,
       sum(views) AS views,
       sum(events) AS events,
       hll_cardinality(hll_union_agg(visitors))::bigint AS visitors
FROM site_daily_pages
WHERE site = ${site:sqlstring}
  AND day BETWEEN $__timeFrom()::date AND $__timeTo()::date
  AND path <> ''
GROUP BY path
ORDER BY views DESC, events DESC, page
LIMIT 20
