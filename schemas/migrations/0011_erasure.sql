-- Erasure of one visitor everywhere (issue #23): the requests and their audit, the lake's
-- per-object visitor index, and the log of lake objects rewritten without a visitor's rows.
--
-- A request is recorded with the raw ID it names (the run needs it to find the visitor's rows)
-- and keeps only its hash once it completes: the audit row says which visitor (as a SHA-256 of
-- kind, site and ID), when, and how much each store removed.
CREATE TABLE erasure_requests (
    id                  bigserial   PRIMARY KEY,
    site                text        NOT NULL,
    id_kind             text        NOT NULL CHECK (id_kind IN ('anonymous_id', 'user_id')),
    -- The raw ID: present while pending, NULL once completed.
    visitor             text,
    -- hex SHA-256 of "<id_kind>\n<site>\n<ID>": what the audit keeps.
    visitor_sha256      text        NOT NULL,
    requested_at        timestamptz NOT NULL DEFAULT now(),
    -- The first run that worked on it, and the one that finished it.
    started_at          timestamptz,
    completed_at        timestamptz,
    dynamo_items_removed bigint     NOT NULL DEFAULT 0,
    lake_rows_removed   bigint      NOT NULL DEFAULT 0,
    lake_objects_rewritten bigint   NOT NULL DEFAULT 0,
    CHECK ((completed_at IS NULL) = (visitor IS NOT NULL))
);
-- Asking again while a request for the same visitor is pending is the same request.
CREATE UNIQUE INDEX erasure_requests_pending ON erasure_requests (visitor_sha256) WHERE completed_at IS NULL;

-- Which visitors each lake object may hold: a Bloom filter over the hashes of its rows'
-- (site, anonymous_id) and (site, user_id) pairs (format: schemas::visitors), written in the
-- same transaction that registers the object (the consumer's claim, the compactor's and forget's
-- commits) and deleted with the object. Forget reads these few bytes per object instead of the
-- lake. An object without a row (written before this migration) is read whole.
-- Unlike lake_objects, whose rows the consumer prunes after twice the dedup window, a row here
-- lives as long as its object.
CREATE TABLE lake_object_visitors (
    id          bigint      PRIMARY KEY,  -- fnv1a64(object_key), as lake_objects.id
    object_key  text        NOT NULL,
    visitors    bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Forget's swaps: `old_key` was rewritten as `new_key` (NULL when no row stayed), committed with
-- the marks; `deleted_at` is set once `old_key` is gone. A row with `deleted_at` NULL is a swap a
-- crash interrupted: the next forget or compactor run deletes `old_key` without comparing its
-- rows to `new_key` (they differ on purpose).
CREATE TABLE lake_erasures (
    old_key      text        PRIMARY KEY,
    new_key      text,
    committed_at timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);
CREATE INDEX lake_erasures_pending ON lake_erasures (old_key) WHERE deleted_at IS NULL;

-- An object whose rows were erased: a redelivered batch must not write its events again (as for
-- a compacted object), including when no row stayed and there is no `compacted_into`.
ALTER TABLE lake_objects ADD COLUMN erased_at timestamptz;
