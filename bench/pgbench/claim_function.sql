-- The claim statement (stream-consumer CLAIM_SQL) with 500 fresh IDs per call, for pgbench:
-- psql -d <scratch db with the migrations> -f claim_function.sql, then
-- pgbench -n -c 2 -j 2 -T 180 -P 15 -f claim.sql <db>   (bench/RESULTS.md, "Planner statistics for the ledger").
-- A plpgsql copy, so that the statement is prepared and its plan cached as sqlx's is.
CREATE OR REPLACE FUNCTION bench_claim(n int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE ids uuid[]; owners int8[]; objs int8[]; ep date; beh boolean; r int;
BEGIN
  SELECT array_agg(gen_random_uuid()), array_agg(1::int8), array_agg(1::int8) INTO ids, owners, objs FROM generate_series(1,n);
  SELECT epoch, behind INTO ep, beh FROM ledger_enter();
  INSERT INTO lake_objects (id, object_key) VALUES (1, 'k') ON CONFLICT (id) DO NOTHING;
  WITH input AS (
                 SELECT * FROM UNNEST(ids, owners, objs) AS t(event_id, owner, lake_object)
             ), known AS (
                 SELECT s.event_id, s.owner, s.lake_object, s.day FROM seen_events s JOIN input i USING (event_id)
             ), inserted AS (
                 INSERT INTO seen_events (event_id, owner, lake_object, day)
                 SELECT event_id, owner, lake_object, ep FROM input
                 WHERE event_id NOT IN (SELECT event_id FROM known WHERE day < ep)
                 ORDER BY event_id
                 ON CONFLICT (event_id, day) DO NOTHING
                 RETURNING event_id
             )
             SELECT count(*) INTO r
             FROM input i
             LEFT JOIN inserted ins ON ins.event_id = i.event_id
             LEFT JOIN known k ON k.event_id = i.event_id
             LEFT JOIN lake_objects lo ON lo.id = k.lake_object;
  RETURN r;
END $$;
