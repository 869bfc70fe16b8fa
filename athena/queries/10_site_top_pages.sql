-- Top 5 pages per site: page views and unique visitors (user_id, else anonymous_id; approx_distinct)
-- per URL path, the query string and fragment dropped so /cart?utm_source=x is /cart.
WITH pages AS (
    SELECT site,
           url_extract_path(url) AS path,
           count(DISTINCT event_id) AS views,
           approx_distinct(coalesce(user_id, anonymous_id)) AS visitors
    FROM events
    WHERE dt BETWEEN ? AND ?
      AND event_type = 'page_view'
      AND url IS NOT NULL
      AND site IS NOT NULL
    GROUP BY site, url_extract_path(url)
)
SELECT site, path, views, visitors
FROM (
    SELECT pages.*, row_number() OVER (PARTITION BY site ORDER BY views DESC, path) AS place
    FROM pages
) ranked
WHERE place <= 5
ORDER BY site, place
