-- Dead-letter records per reason (table dead_letter, athena/ddl/dead_letter.sql). Its dt/hour
-- are the hour the consumer quarantined the records, not when they were sent.
SELECT reason_code, count(*) AS records, count(DISTINCT shard_id) AS shards
FROM dead_letter
WHERE dt BETWEEN ? AND ?
GROUP BY reason_code
ORDER BY records DESC, reason_code
