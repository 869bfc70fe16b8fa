-- Top pages: page views and distinct visitors per URL path (query string and fragment dropped).
SELECT url_extract_path(url) AS path,
       count(DISTINCT event_id) AS views,
       count(DISTINCT anonymous_id) AS visitors
FROM events
WHERE dt BETWEEN ? AND ?
  AND event_type = 'page_view'
  AND url IS NOT NULL
GROUP BY url_extract_path(url)
ORDER BY views DESC, path
LIMIT 10
