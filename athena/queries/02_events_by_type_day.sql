-- Events per type per day of receipt (dt is the UTC receive date).
SELECT dt, event_type, count(DISTINCT event_id) AS events
FROM events
WHERE dt BETWEEN ? AND ?
GROUP BY dt, event_type
ORDER BY dt, event_type
