-- Events and visitors per site, UTC day the event occurred and client country (issue #23: the
-- producer looks the client address's country up before anonymising it; the address itself is
-- never stored). Laid out as 0009 left the other per-site aggregates: each batch *inserts* one
-- row per key into `site_daily_countries_delta` in its claim transaction (no conflict, no row
-- lock, a sketch of only that batch's visitors), `aggregates_rollup()` moves the delta rows into
-- `site_daily_countries_rollup` exactly once, and the view `site_daily_countries` is rollup +
-- delta summed per key, so readers see every committed batch.
--
-- `country` is ISO 3166-1 alpha-2, or '' for events without one (the lookup off, an address the
-- database does not know, records written before the lookup), so a day's countries sum to the
-- day's events as its pages do. Rows start with this migration: nothing earlier is backfilled,
-- since no store kept a country before it.

CREATE TABLE site_daily_countries_rollup (
    site        text        NOT NULL,
    day         date        NOT NULL,
    country     text        NOT NULL,
    events      bigint      NOT NULL CHECK (events >= 0),
    -- The consumer's precision (0007): sketches of different precisions do not union.
    visitors    hll         NOT NULL DEFAULT hll_empty(14, 5),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, day, country)
);

-- Append-only: no key, no index (the rollup reads it whole), one row per key and batch.
CREATE TABLE site_daily_countries_delta (
    site        text        NOT NULL,
    day         date        NOT NULL,
    country     text        NOT NULL,
    events      bigint      NOT NULL CHECK (events >= 0),
    visitors    hll         NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW site_daily_countries AS
SELECT site, day, country, sum(events)::bigint AS events, hll_union_agg(visitors) AS visitors,
       max(updated_at) AS updated_at
FROM (SELECT site, day, country, events, visitors, updated_at FROM site_daily_countries_rollup
      UNION ALL
      SELECT site, day, country, events, visitors, added_at FROM site_daily_countries_delta) AS t
GROUP BY site, day, country;

CREATE VIEW site_daily_country_stats AS
SELECT site, day, country, events, hll_cardinality(visitors)::bigint AS visitors
FROM site_daily_countries;

-- The dashboards' reader names each object (0006); the writer's default privileges (0003) cover
-- the two tables.
GRANT SELECT ON site_daily_countries, site_daily_country_stats TO analytics_reader;

-- 0009's rollup, with the country table moved the same way in the same transaction.
CREATE OR REPLACE FUNCTION aggregates_rollup() RETURNS bigint
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
    moved := moved + n;
    WITH d AS (DELETE FROM site_daily_countries_delta RETURNING site, day, country, events, visitors),
         up AS (INSERT INTO site_daily_countries_rollup AS r (site, day, country, events, visitors)
                SELECT site, day, country, sum(events), hll_union_agg(visitors) FROM d
                GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                ON CONFLICT (site, day, country) DO UPDATE
                    SET events = r.events + EXCLUDED.events, visitors = hll_union(r.visitors, EXCLUDED.visitors),
                        updated_at = now())
    SELECT count(*) INTO n FROM d;
    RETURN moved + n;
END
$$;
