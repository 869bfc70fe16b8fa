-- The Glue table `events`, as Terraform creates it (terraform/lake.tf). Terraform is the source
-- of truth; this is the same table in Athena DDL, for accounts without the Terraform stack.
-- Columns are schemas/lake_columns.json in file order (a test checks this file against it).
-- Replace <lake-bucket> (Terraform output `lake_bucket`).
CREATE EXTERNAL TABLE IF NOT EXISTS events (
    event_id        string,
    event_type      string,
    occurred_at     timestamp,
    received_at     timestamp,
    anonymous_id    string,
    user_id         string,
    session_id      string,
    url             string,
    referrer        string,
    user_agent      string,
    client_ip       string,
    properties      string,
    browser         string,
    os              string,
    device_class    string,
    is_bot          boolean,
    source_shard    string,
    source_sequence string,
    -- Added with sites: files written before it have no such column and read as NULL (Athena
    -- matches Parquet columns by name). On an existing table: ALTER TABLE events ADD COLUMNS (site string)
    site            string,
    -- Added with clock correction (NULL in older files, and whenever nothing was corrected):
    -- the client's own occurred_at (occurred_at is then the corrected time) and the client's
    -- clock at send. On an existing table:
    -- ALTER TABLE events ADD COLUMNS (original_occurred_at timestamp, sent_at timestamp)
    original_occurred_at timestamp,
    sent_at         timestamp,
    -- Added with tracking plans: a warn-mode plan's violations, a JSON array of
    -- {pointer, rule, message}; NULL when clean. ALTER TABLE events ADD COLUMNS (plan_violations string)
    plan_violations string,
    -- Added with the country lookup: the client address's ISO 3166-1 alpha-2 country, looked up
    -- before the address was anonymised (data: IP Geolocation by DB-IP, https://db-ip.com,
    -- CC BY 4.0); NULL when the lookup is off or does not place the address, and in older files.
    -- ALTER TABLE events ADD COLUMNS (country string)
    country         string
)
PARTITIONED BY (dt string, hour string)
STORED AS PARQUET
LOCATION 's3://<lake-bucket>/events/'
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
    'storage.location.template' = 's3://<lake-bucket>/events/dt=${dt}/hour=${hour}/'
)
