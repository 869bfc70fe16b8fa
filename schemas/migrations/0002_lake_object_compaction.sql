-- Set by the compactor when a micro-batch object's rows have been rewritten into a compacted
-- object. The consumer treats events assigned to such an object as already in the lake, so a
-- batch redelivered after its hour was compacted cannot bring its rows back.
ALTER TABLE lake_objects ADD COLUMN IF NOT EXISTS compacted_into text;
