-- Share of events sent by bots (is_bot: the user agent is a known crawler) per day.
SELECT dt,
       count(DISTINCT event_id) AS events,
       count(DISTINCT CASE WHEN is_bot THEN event_id END) AS bot_events,
       round(CAST(count(DISTINCT CASE WHEN is_bot THEN event_id END) AS double) / count(DISTINCT event_id), 4) AS bot_share
FROM events
WHERE dt BETWEEN ? AND ?
GROUP BY dt
ORDER BY dt
