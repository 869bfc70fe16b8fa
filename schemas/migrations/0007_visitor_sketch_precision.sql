-- Visitor sketches at precision log2m = 14 (16,384 registers) instead of the extension's default
-- 11. At 11 the relative standard error is 1.04/sqrt(2048) ≈ 2.3%, and 100,000 test visitors
-- came out 4.9% high; at 14 it is 1.04/sqrt(16384) ≈ 0.8%, so ±2% holds with margin. The cost
-- is size, and only for busy rows: a sketch stays a short list of hashes (explicit, then sparse)
-- while its row has few visitors, and a full one is 10 KiB instead of 1.3 KiB.
--
-- The consumer builds every sketch with this precision (sinks/postgres.rs,
-- VISITOR_SKETCH_LOG2M); sketches of different precisions cannot be unioned ("register count
-- does not match"), so the column defaults must agree. Rows cannot predate this migration with
-- another precision: 0005 shipped together with it.
ALTER TABLE site_hourly ALTER COLUMN visitors SET DEFAULT hll_empty(14, 5);
ALTER TABLE site_daily_pages ALTER COLUMN visitors SET DEFAULT hll_empty(14, 5);
