-- Planner statistics for the partitioned ledger (issue #21). The claim looks every batch's IDs
-- up across seen_events' partitions; which plan it gets depends on statistics that nothing kept
-- fresh:
--
-- * Autovacuum never analyzes a partitioned table itself (PostgreSQL's documented rule), so the
--   parent `seen_events` had none: the planner assumed 200 distinct IDs, estimated millions of
--   matches for a 500-ID lookup, and the statement's cost passed `jit_above_cost` — every claim
--   then spent ~200 ms compiling itself.
-- * A partition young or grown since autovacuum last saw it (or on a server with autovacuum off)
--   has no statistics either: the lookup became a sequential scan of the whole day's partition,
--   so the claim's cost grew with every event claimed that day (bench/RESULTS.md, "3,000 events/s
--   for 10 minutes": 200 ms per 500-event claim at 1.7 million rows, against 10 ms analyzed).
--
-- ledger_analyze() applies autovacuum's own rule to the ledger — analyze once the rows changed
-- since the last ANALYZE exceed a base plus a fraction of the table — and, when a partition is
-- due, analyzes the parent (which samples every partition and analyzes each of them too). The
-- consumer calls it every few seconds; it is a catalog query unless it has work to do, and one
-- process at a time does it (the others return at once). The application role may not ANALYZE
-- a table it does not own, hence SECURITY DEFINER, as for ledger_roll().

CREATE FUNCTION ledger_analyze() RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    -- autovacuum_analyze_threshold and _scale_factor for this table: 1,000 rows + 10 %. A
    -- 1,000-row floor (autovacuum's is 50) keeps a new day's partition from being analyzed every
    -- few batches while it is small enough for any plan.
    base constant bigint := 1000;
    fraction constant float8 := 0.1;
    due boolean;
BEGIN
    SELECT coalesce(bool_or(s.n_mod_since_analyze > base + fraction * greatest(c.reltuples, 0)), false)
    INTO due
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_stat_user_tables s ON s.relid = c.oid
    WHERE i.inhparent = 'public.seen_events'::regclass;
    -- The lock key is the epoch's plus one: a key of its own that nothing else takes.
    IF NOT due OR NOT pg_try_advisory_xact_lock(ledger_lock_key() + 1) THEN
        RETURN false;
    END IF;
    ANALYZE public.seen_events;
    RETURN true;
END
$$;

REVOKE ALL ON FUNCTION ledger_analyze() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_analyze() TO analytics_writer;
