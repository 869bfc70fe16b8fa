-- Counts per event type, and per event type and hour (by receive time). The consumer adds to
-- these only for events it has just claimed in seen_events, in the same transaction.
CREATE TABLE IF NOT EXISTS event_type_counts (
    event_type  text        PRIMARY KEY,
    event_count bigint      NOT NULL CHECK (event_count >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS event_type_hourly_counts (
    event_type  text        NOT NULL,
    hour        timestamptz NOT NULL,
    event_count bigint      NOT NULL CHECK (event_count >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_type, hour)
);

-- The dedup ledger: which stream record owns each event_id (first claim wins) and which lake
-- object it was assigned to. Kept for the dedup window after the claim, then pruned. The window
-- runs from the claim, not from received_at, so a consumer replaying an old backlog still
-- deduplicates its own retries.
-- owner and lake_object are 64-bit hashes (of shard+sequence and of the object key) so a row
-- stays ~100 bytes including its index entry.
CREATE TABLE IF NOT EXISTS seen_events (
    event_id    uuid        PRIMARY KEY,
    owner       bigint      NOT NULL,
    lake_object bigint      NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now()
);
-- Rows are inserted in claimed_at order, so a BRIN index makes pruning cheap at ~no cost.
CREATE INDEX IF NOT EXISTS seen_events_claimed_at_brin ON seen_events USING brin (claimed_at);

-- One row per lake object a batch was assigned; lets a retry with a different record range
-- find (and check) the object an event was first written to.
CREATE TABLE IF NOT EXISTS lake_objects (
    id          bigint      PRIMARY KEY,
    object_key  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS lake_objects_created_at_brin ON lake_objects USING brin (created_at);

-- The local runner's per-shard checkpoints (the event source mapping keeps these on AWS).
CREATE TABLE IF NOT EXISTS shard_checkpoints (
    stream_name     text        NOT NULL,
    shard_id        text        NOT NULL,
    sequence_number text,
    shard_closed    boolean     NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_name, shard_id)
);
