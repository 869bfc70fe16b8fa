-- The table `dead_letter` over the quarantined records: NDJSON under
-- dead-letter/dt=YYYY-MM-DD/hour=HH/ (the hour the consumer quarantined them), one object per
-- batch, one line per record. Terraform creates the same table (terraform/compactor.tf,
-- aws_glue_catalog_table.dead_letter); this DDL is for accounts without the Terraform stack.
-- line is the bad event's line in its record (records pack events; NULL in rows from before
-- packing, when a record was one event). payload_base64 is that line's raw bytes; in Athena: from_utf8(from_base64(payload_base64)).
-- approximate_arrival is ISO-8601 text ('2024-05-01T10:00:00.123Z'); in Athena:
-- from_iso8601_timestamp(approximate_arrival).
-- Replace <lake-bucket> (Terraform output `lake_bucket`).
CREATE EXTERNAL TABLE IF NOT EXISTS dead_letter (
    reason_code         string,
    reason              string,
    shard_id            string,
    sequence_number     string,
    line                int,
    approximate_arrival string,
    payload_base64      string
)
PARTITIONED BY (dt string, hour string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://<lake-bucket>/dead-letter/'
TBLPROPERTIES (
    'projection.enabled' = 'true',
    'projection.dt.type' = 'date',
    'projection.dt.format' = 'yyyy-MM-dd',
    'projection.dt.range' = '2024-01-01,NOW',
    'projection.dt.interval' = '1',
    'projection.dt.interval.unit' = 'DAYS',
    'projection.hour.type' = 'integer',
    'projection.hour.range' = '0,23',
    'projection.hour.digits' = '2',
    'storage.location.template' = 's3://<lake-bucket>/dead-letter/dt=${dt}/hour=${hour}/'
)
