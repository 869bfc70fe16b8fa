-- The dashboards' privileges: reading the per-site aggregates (the "Site analytics" Grafana
-- dashboard, grafana/sql/site_analytics/), nothing else — not the ledger (seen_events: event IDs),
-- not the checkpoints, no writes. Held by a group role that cannot log in, like analytics_writer
-- (0003): Grafana's login is made a member by the operator (terraform/README.md, "Site analytics
-- dashboard"), so no migration knows who logs in or holds a password. Unlike the writer's, these
-- grants name each object: a table a later migration adds stays unreadable until it is granted.
--
-- Created only when missing, and a concurrent creation in another database is not an error (see 0003).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'analytics_reader') THEN
        CREATE ROLE analytics_reader NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- The sketch tables, because visitors over several rows are the union of their sketches
-- (hll_union_agg), and the views with the counts as numbers. USAGE on the schema and EXECUTE on
-- the hll functions are everyone's by default, as the writer role relies on too.
GRANT SELECT ON site_hourly, site_daily_pages, site_hourly_stats, site_daily_page_stats TO analytics_reader;
