-- Funnel page_view -> purchase by anonymous_id: of the users who viewed a page, how many
-- purchased at or after their first view (by the client's occurred_at).
-- min/max are not changed by a row seen twice, so this needs no DISTINCT.
WITH per_user AS (
    SELECT anonymous_id,
           min(occurred_at) FILTER (WHERE event_type = 'page_view') AS first_view,
           max(occurred_at) FILTER (WHERE event_type = 'purchase') AS last_purchase
    FROM events
    WHERE dt BETWEEN ? AND ?
      AND event_type IN ('page_view', 'purchase')
      AND anonymous_id IS NOT NULL
    GROUP BY anonymous_id
)
SELECT count(first_view) AS viewers,
       count_if(last_purchase >= first_view) AS purchased_after_view,
       round(CAST(count_if(last_purchase >= first_view) AS double) / nullif(count(first_view), 0), 4) AS conversion
FROM per_user
