-- Per-site aggregates with unique visitors (issue #20). The consumer adds to these in the same
-- ledger transaction and statement as the event type counts, only for events claimed just now,
-- so a redelivered batch changes nothing. Visitors are HyperLogLog sketches (the `hll`
-- extension: Debian's postgresql-15-hll locally, a supported extension on Amazon RDS for
-- PostgreSQL): sketches of different batches, hours or days union without double counting a
-- visitor, which plain counts cannot do. A visitor is `user_id` when the event has one, else
-- `anonymous_id`; events with neither add to `events` but not to `visitors`.
--
-- Both tables are keyed by when the event *occurred* (after the producer's clock-skew
-- correction), unlike event_type_hourly_counts and the lake's partitions, which are by receive
-- time. Rows start with this migration: nothing earlier is backfilled, because the events'
-- visitors and URLs were never kept in PostgreSQL (the lake has them; see athena/queries/).
CREATE EXTENSION IF NOT EXISTS hll;

CREATE TABLE IF NOT EXISTS site_hourly (
    site        text        NOT NULL,
    event_type  text        NOT NULL,
    hour        timestamptz NOT NULL,
    events      bigint      NOT NULL CHECK (events >= 0),
    visitors    hll         NOT NULL DEFAULT hll_empty(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, event_type, hour)
);

-- One row per site, UTC day and page. `path` is the URL's path without query string or
-- fragment ('' for events without a URL, so that the events of a day sum to the day's events);
-- `views` counts the `page_view` events among them.
CREATE TABLE IF NOT EXISTS site_daily_pages (
    site        text        NOT NULL,
    day         date        NOT NULL,
    path        text        NOT NULL,
    events      bigint      NOT NULL CHECK (events >= 0),
    views       bigint      NOT NULL CHECK (views >= 0),
    visitors    hll         NOT NULL DEFAULT hll_empty(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, day, path)
);

-- What dashboards and analysts read: the sketches as numbers. A visitor count over several rows
-- is the cardinality of the union of their sketches (hll_union_agg), never a sum.
CREATE OR REPLACE VIEW site_hourly_stats AS
SELECT site, event_type, hour, events, hll_cardinality(visitors)::bigint AS visitors
FROM site_hourly;

CREATE OR REPLACE VIEW site_daily_page_stats AS
SELECT site, day, path, events, views, hll_cardinality(visitors)::bigint AS visitors
FROM site_daily_pages;
