-- Aggregates without hot rows (issue #21). Until now every batch upserted the same few rows —
-- the busiest event types' counters and their hours, each site's visitor sketches — and held
-- their row locks until its commit, so concurrent batches queued behind each other: with 16
-- writers the claim + aggregate transaction did fewer events/s than with 4 (bench/RESULTS.md,
-- "PostgreSQL write path"). Rewriting a busy row's 10 KiB visitor sketch for every batch also
-- wrote ~2 KB of WAL per event.
--
-- Now each batch *inserts* its figures, one row per key, into a `_delta` table (no conflict, no
-- row lock, a sketch of only that batch's visitors), in its claim transaction as before, so a
-- redelivered batch still adds nothing. `aggregates_rollup()` moves the delta rows into the
-- `_rollup` tables in one transaction (delete and upsert together: each row is added once), one
-- process at a time; the consumer runs it every few seconds. The tables' old names are views of
-- rollup + delta, summed per key (visitors as the sketches' union), so every reader — the
-- dashboards, the verifier, analysts' SQL — sees every committed batch at once and needs no change.

ALTER TABLE event_type_counts RENAME TO event_type_counts_rollup;
ALTER INDEX event_type_counts_pkey RENAME TO event_type_counts_rollup_pkey;
ALTER TABLE event_type_hourly_counts RENAME TO event_type_hourly_counts_rollup;
ALTER INDEX event_type_hourly_counts_pkey RENAME TO event_type_hourly_counts_rollup_pkey;
DROP VIEW site_hourly_stats;
DROP VIEW site_daily_page_stats;
ALTER TABLE site_hourly RENAME TO site_hourly_rollup;
ALTER INDEX site_hourly_pkey RENAME TO site_hourly_rollup_pkey;
ALTER TABLE site_daily_pages RENAME TO site_daily_pages_rollup;
ALTER INDEX site_daily_pages_pkey RENAME TO site_daily_pages_rollup_pkey;

-- Append-only: no key, no index (the rollup reads them whole), one row per key and batch.
CREATE TABLE event_type_counts_delta (
    site        text        NOT NULL,
    event_type  text        NOT NULL,
    event_count bigint      NOT NULL CHECK (event_count >= 0),
    added_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE event_type_hourly_counts_delta (
    site        text        NOT NULL,
    event_type  text        NOT NULL,
    hour        timestamptz NOT NULL,
    event_count bigint      NOT NULL CHECK (event_count >= 0),
    added_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE site_hourly_delta (
    site        text        NOT NULL,
    event_type  text        NOT NULL,
    hour        timestamptz NOT NULL,
    events      bigint      NOT NULL CHECK (events >= 0),
    visitors    hll         NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE site_daily_pages_delta (
    site        text        NOT NULL,
    day         date        NOT NULL,
    path        text        NOT NULL,
    events      bigint      NOT NULL CHECK (events >= 0),
    views       bigint      NOT NULL CHECK (views >= 0),
    visitors    hll         NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW event_type_counts AS
SELECT site, event_type, sum(event_count)::bigint AS event_count, max(updated_at) AS updated_at
FROM (SELECT site, event_type, event_count, updated_at FROM event_type_counts_rollup
      UNION ALL
      SELECT site, event_type, event_count, added_at FROM event_type_counts_delta) AS t
GROUP BY site, event_type;

CREATE VIEW event_type_hourly_counts AS
SELECT site, event_type, hour, sum(event_count)::bigint AS event_count, max(updated_at) AS updated_at
FROM (SELECT site, event_type, hour, event_count, updated_at FROM event_type_hourly_counts_rollup
      UNION ALL
      SELECT site, event_type, hour, event_count, added_at FROM event_type_hourly_counts_delta) AS t
GROUP BY site, event_type, hour;

CREATE VIEW site_hourly AS
SELECT site, event_type, hour, sum(events)::bigint AS events, hll_union_agg(visitors) AS visitors,
       max(updated_at) AS updated_at
FROM (SELECT site, event_type, hour, events, visitors, updated_at FROM site_hourly_rollup
      UNION ALL
      SELECT site, event_type, hour, events, visitors, added_at FROM site_hourly_delta) AS t
GROUP BY site, event_type, hour;

CREATE VIEW site_daily_pages AS
SELECT site, day, path, sum(events)::bigint AS events, sum(views)::bigint AS views,
       hll_union_agg(visitors) AS visitors, max(updated_at) AS updated_at
FROM (SELECT site, day, path, events, views, visitors, updated_at FROM site_daily_pages_rollup
      UNION ALL
      SELECT site, day, path, events, views, visitors, added_at FROM site_daily_pages_delta) AS t
GROUP BY site, day, path;

CREATE VIEW site_hourly_stats AS
SELECT site, event_type, hour, events, hll_cardinality(visitors)::bigint AS visitors
FROM site_hourly;

CREATE VIEW site_daily_page_stats AS
SELECT site, day, path, events, views, hll_cardinality(visitors)::bigint AS visitors
FROM site_daily_pages;

GRANT SELECT ON site_hourly, site_daily_pages, site_hourly_stats, site_daily_page_stats TO analytics_reader;

-- Moves every committed delta row into the rollup tables, in one transaction with the caller's
-- (each row is added exactly once: deleted and added together, or neither). Only one process
-- rolls up at a time; another that calls meanwhile returns -1 at once rather than wait. Returns
-- how many delta rows it moved. Keys are upserted in sorted order, and only rollups write the
-- rollup tables, so nothing else ever waits on their rows.
CREATE FUNCTION aggregates_rollup() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    moved bigint := 0;
    n bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(2100000000022) THEN
        RETURN -1;
    END IF;
    WITH d AS (DELETE FROM event_type_counts_delta RETURNING site, event_type, event_count),
         up AS (INSERT INTO event_type_counts_rollup AS r (site, event_type, event_count)
                SELECT site, event_type, sum(event_count) FROM d GROUP BY 1, 2 ORDER BY 1, 2
                ON CONFLICT (site, event_type) DO UPDATE
                    SET event_count = r.event_count + EXCLUDED.event_count, updated_at = now())
    SELECT count(*) INTO n FROM d;
    moved := moved + n;
    WITH d AS (DELETE FROM event_type_hourly_counts_delta RETURNING site, event_type, hour, event_count),
         up AS (INSERT INTO event_type_hourly_counts_rollup AS r (site, event_type, hour, event_count)
                SELECT site, event_type, hour, sum(event_count) FROM d GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                ON CONFLICT (site, event_type, hour) DO UPDATE
                    SET event_count = r.event_count + EXCLUDED.event_count, updated_at = now())
    SELECT count(*) INTO n FROM d;
    moved := moved + n;
    WITH d AS (DELETE FROM site_hourly_delta RETURNING site, event_type, hour, events, visitors),
         up AS (INSERT INTO site_hourly_rollup AS r (site, event_type, hour, events, visitors)
                SELECT site, event_type, hour, sum(events), hll_union_agg(visitors) FROM d
                GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                ON CONFLICT (site, event_type, hour) DO UPDATE
                    SET events = r.events + EXCLUDED.events, visitors = hll_union(r.visitors, EXCLUDED.visitors),
                        updated_at = now())
    SELECT count(*) INTO n FROM d;
    moved := moved + n;
    WITH d AS (DELETE FROM site_daily_pages_delta RETURNING site, day, path, events, views, visitors),
         up AS (INSERT INTO site_daily_pages_rollup AS r (site, day, path, events, views, visitors)
                SELECT site, day, path, sum(events), sum(views), hll_union_agg(visitors) FROM d
                GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                ON CONFLICT (site, day, path) DO UPDATE
                    SET events = r.events + EXCLUDED.events, views = r.views + EXCLUDED.views,
                        visitors = hll_union(r.visitors, EXCLUDED.visitors), updated_at = now())
    SELECT count(*) INTO n FROM d;
    RETURN moved + n;
END
$$;
