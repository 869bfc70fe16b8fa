-- Sites (producer-api/src/sites.rs): every event carries the id of the site whose key admitted
-- it, and the counts are kept per site. Rows counted before sites existed, and events recorded
-- before them (no `site` in the record), are under the empty site '' (key columns cannot be
-- null; stream_consumer::aggregate::NO_SITE). The consumer's upsert stays one statement per batch,
-- now ON CONFLICT (site, event_type[, hour]).
ALTER TABLE event_type_counts ADD COLUMN site text NOT NULL DEFAULT '';
ALTER TABLE event_type_counts DROP CONSTRAINT event_type_counts_pkey;
ALTER TABLE event_type_counts ADD PRIMARY KEY (site, event_type);

ALTER TABLE event_type_hourly_counts ADD COLUMN site text NOT NULL DEFAULT '';
ALTER TABLE event_type_hourly_counts DROP CONSTRAINT event_type_hourly_counts_pkey;
ALTER TABLE event_type_hourly_counts ADD PRIMARY KEY (site, event_type, hour);
