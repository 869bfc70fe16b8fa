-- Events and unique visitors per visitor country in the time range, widened to whole UTC days
-- (countries are kept per day; visitors are the union of the days' sketches). The country is the
-- producer's lookup of the client address before it was anonymised (ISO 3166-1 alpha-2; data:
-- IP Geolocation by DB-IP, https://db-ip.com, CC BY 4.0); "unknown" when the lookup is off or
-- does not place the address (private and loopback addresses among them).
SELECT coalesce(nullif(country, ''), 'unknown') AS country,
       sum(events) AS events,
       hll_cardinality(hll_union_agg(visitors))::bigint AS visitors
FROM site_daily_countries
WHERE site = ${site:sqlstring}
  AND day BETWEEN $__timeFrom()::date AND $__timeTo()::date
GROUP BY country
ORDER BY events DESC, country
LIMIT 50
