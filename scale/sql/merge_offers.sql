-- Silver: merge one source snapshot's changes into the offers table (scale/silver.py runs it;
-- data_at_scale_design.md quotes it verbatim, tests/test_scale_job.py checks both).
--
-- Parameters (Spark SQL named parameter markers):
--   :source_id       the snapshot's source; offers of other sources are never touched
--   :run_id          the snapshot's run; runs of one source are merged in order
--   :run_started_at  when this reconcile run started: the soft-delete stamp
--
-- The source, the view offer_changes, is built BEFORE the MERGE (scale/silver.py):
--   op = 'upsert': the snapshot's offers, de-duplicated by source_key, minus every offer whose
--                  (source_key, content_hash) equals a live stored offer's: unchanged offers
--                  never reach the MERGE, so no data file is rewritten for them;
--   op = 'retire': live stored offers of :source_id that the snapshot lacks, and only when the
--                  snapshot is complete: an incomplete snapshot retires nothing.
-- Retirements arrive as rows of the source, not as WHEN NOT MATCHED BY SOURCE: with unchanged
-- offers filtered out, "not in the source" no longer means "not in the snapshot", and that
-- clause joins every row of the table (copy-on-write, it rewrites every data file of it).
MERGE INTO silver.offers AS t
USING offer_changes AS s
ON t.source_id = :source_id AND t.source_id = s.source_id AND t.source_key = s.source_key
WHEN MATCHED AND s.op = 'retire' AND t.deleted_at IS NULL AND t.run_id < :run_id THEN
  UPDATE SET t.deleted_at = :run_started_at, t.run_id = :run_id
WHEN MATCHED AND s.op = 'upsert' AND t.run_id < :run_id THEN
  UPDATE SET
    t.priority = s.priority, t.gtin = s.gtin, t.mpn = s.mpn, t.brand = s.brand,
    t.title = s.title, t.description = s.description, t.category = s.category,
    t.price = s.price, t.currency = s.currency, t.stock = s.stock,
    t.source_updated_at = s.source_updated_at, t.content_hash = s.content_hash,
    t.run_id = :run_id, t.deleted_at = NULL
WHEN NOT MATCHED AND s.op = 'upsert' THEN
  INSERT (source_id, source_key, priority, gtin, mpn, brand, title, description, category,
          price, currency, stock, source_updated_at, content_hash, run_id, deleted_at)
  VALUES (s.source_id, s.source_key, s.priority, s.gtin, s.mpn, s.brand, s.title,
          s.description, s.category, s.price, s.currency, s.stock, s.source_updated_at,
          s.content_hash, :run_id, NULL)
