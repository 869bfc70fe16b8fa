-- The dedup ledger, partitioned by the UTC day of the claim (issue #21). Forgetting a day of
-- claims becomes DROP TABLE of its partition instead of a DELETE of every row (which wrote WAL
-- for each row, left the table and its random-UUID index bloated for VACUUM, and at 100,000
-- events/s meant deleting ~360 million rows an hour).
--
-- Exactly once across partitions. A partition's primary key (event_id, day) makes an ID unique
-- within its day only, so every claim inserts into one day — the *epoch* in ledger_epoch — and
-- first looks the IDs up in every earlier partition. That is exact only if no claim still writes
-- to an earlier day once any claim writes to a later one; the epoch's advisory lock ensures it:
-- each claim transaction holds it shared from ledger_enter() to its commit, and ledger_roll()
-- takes it exclusively to move the epoch, so it waits for the claims in flight and holds new
-- ones back until the new epoch is committed. Earlier partitions are therefore frozen, and two
-- claims of one ID either meet in the epoch's partition (ON CONFLICT) or one sees the other's.
--
-- The application role may not run DDL (0003), so creating and dropping partitions happens in
-- SECURITY DEFINER functions owned by the role that runs migrations, granted to the application
-- role only.

CREATE TABLE ledger_epoch (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    day       date    NOT NULL
);
INSERT INTO ledger_epoch (day) VALUES ((now() AT TIME ZONE 'UTC')::date);

-- The key of the epoch's advisory lock (any constant; named once, here).
CREATE FUNCTION ledger_lock_key() RETURNS bigint LANGUAGE sql IMMUTABLE AS 'SELECT 2100000000021::bigint';

ALTER TABLE seen_events RENAME TO seen_events_unpartitioned;
ALTER INDEX seen_events_pkey RENAME TO seen_events_unpartitioned_pkey;
DROP INDEX seen_events_claimed_at_brin;

CREATE TABLE seen_events (
    event_id    uuid        NOT NULL,
    owner       bigint      NOT NULL,
    lake_object bigint      NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    day         date        NOT NULL,
    PRIMARY KEY (event_id, day)
) PARTITION BY LIST (day);

-- The partition of one day, created when missing.
CREATE FUNCTION ledger_add_partition(d date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    EXECUTE format('CREATE TABLE IF NOT EXISTS public.%I PARTITION OF public.seen_events FOR VALUES IN (%L)',
                   'seen_events_' || to_char(d, 'YYYYMMDD'), d);
END
$$;

-- Called by each claim transaction first: holds the epoch (shared) until the transaction ends and
-- says which day to claim into, and whether the epoch is behind the database's UTC date (the
-- caller then runs ledger_roll after committing). The epoch is read after the lock is granted,
-- so it is the one committed by the last roll.
CREATE FUNCTION ledger_enter(OUT epoch date, OUT behind boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(ledger_lock_key());
    SELECT e.day, e.day < (now() AT TIME ZONE 'UTC')::date INTO epoch, behind FROM ledger_epoch e;
END
$$;

-- Moves the epoch to the database's UTC date, creating its partition; returns the epoch. Waits
-- for the claims in flight (see above); a no-op without the lock once the epoch is current.
CREATE FUNCTION ledger_roll() RETURNS date
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    epoch date;
BEGIN
    SELECT e.day INTO epoch FROM ledger_epoch e;
    IF epoch >= today THEN
        RETURN epoch;
    END IF;
    PERFORM pg_advisory_xact_lock(ledger_lock_key());
    PERFORM ledger_add_partition(today);
    UPDATE ledger_epoch SET day = today WHERE day < today;
    RETURN today;
END
$$;

-- Drops the partitions of days that ended at or before `cutoff` (never the epoch's, nor a later
-- one); returns how many claims they held, from the planner's statistics when it has them (a
-- day's partition is large: counting it exactly would read it all). DROP of a partition locks
-- the parent table: one that cannot get its lock within 5 s (a long query on the ledger) is
-- left for the next prune rather than holding every claim back behind it.
CREATE FUNCTION ledger_prune(cutoff timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    epoch date;
    part record;
    held bigint;
    forgotten bigint := 0;
BEGIN
    SELECT e.day INTO epoch FROM ledger_epoch e;
    FOR part IN
        SELECT c.oid::regclass AS name, c.reltuples, to_date(substring(c.relname FROM 13), 'YYYYMMDD') AS day
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'public.seen_events'::regclass AND c.relname ~ '^seen_events_[0-9]{8}$'
        ORDER BY 3
    LOOP
        CONTINUE WHEN part.day >= epoch OR ((part.day + 1)::timestamp AT TIME ZONE 'UTC') > cutoff;
        BEGIN
            PERFORM set_config('lock_timeout', '5s', true);
            IF part.reltuples >= 0 THEN
                held := part.reltuples::bigint;
            ELSE
                EXECUTE format('SELECT count(*) FROM %s', part.name) INTO held;
            END IF;
            EXECUTE format('DROP TABLE %s', part.name);
            forgotten := forgotten + held;
        EXCEPTION WHEN lock_not_available THEN
            RAISE NOTICE 'ledger_prune: % is in use; left for the next prune', part.name;
        END;
    END LOOP;
    RETURN forgotten;
END
$$;

REVOKE ALL ON FUNCTION ledger_add_partition(date), ledger_roll(), ledger_prune(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_roll(), ledger_prune(timestamptz) TO analytics_writer;

-- Existing claims move to the partitions of their days (never later than the epoch), so
-- deduplication against them goes on and they are forgotten on the usual schedule. This copies
-- the ledger in one transaction; consumers wait for it (their batches retry), so a large ledger
-- is best migrated at a quiet hour (see README, "Upgrading").
DO $$
DECLARE
    d date;
BEGIN
    FOR d IN
        SELECT DISTINCT least((claimed_at AT TIME ZONE 'UTC')::date, (SELECT day FROM ledger_epoch))
        FROM seen_events_unpartitioned
        UNION SELECT day FROM ledger_epoch
    LOOP
        PERFORM ledger_add_partition(d);
    END LOOP;
END
$$;
INSERT INTO seen_events (event_id, owner, lake_object, claimed_at, day)
SELECT event_id, owner, lake_object, claimed_at,
       least((claimed_at AT TIME ZONE 'UTC')::date, (SELECT day FROM ledger_epoch))
FROM seen_events_unpartitioned;
DROP TABLE seen_events_unpartitioned;
