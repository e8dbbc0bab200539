-- Gold: apply one reconcile run's golden changes (scale/gold.py runs it). Like the silver
-- MERGE, its source, the view golden_changes, holds only what changed (built before it):
--   op = 'upsert': golden products that are new, whose content hash differs from the stored
--                  one, or that come back after being retired;
--   op = 'retire': stored active golden products that no live offer supports any more.
-- Parameter: :reconcile_run, stamped on every changed row: the publisher sends the serving
-- database the rows whose changed_run is above the last run it published.
MERGE INTO gold.products AS t
USING golden_changes AS s
ON t.golden_key = s.golden_key
WHEN MATCHED AND s.op = 'retire' AND t.status = 'active' THEN
  UPDATE SET t.status = 'retired', t.changed_run = :reconcile_run
WHEN MATCHED AND s.op = 'upsert' THEN
  UPDATE SET
    t.gtin = s.gtin, t.title = s.title, t.description = s.description, t.brand = s.brand,
    t.category = s.category, t.best_price = s.best_price, t.currency = s.currency,
    t.best_price_source = s.best_price_source, t.price_outliers = s.price_outliers,
    t.total_stock = s.total_stock, t.availability = s.availability,
    t.offer_count = s.offer_count, t.source_count = s.source_count,
    t.content_hash = s.content_hash, t.status = 'active', t.changed_run = :reconcile_run
WHEN NOT MATCHED AND s.op = 'upsert' THEN
  INSERT (golden_id, golden_key, gtin, title, description, brand, category, best_price,
          currency, best_price_source, price_outliers, total_stock, availability, offer_count,
          source_count, content_hash, status, changed_run)
  VALUES (s.golden_id, s.golden_key, s.gtin, s.title, s.description, s.brand, s.category,
          s.best_price, s.currency, s.best_price_source, s.price_outliers, s.total_stock,
          s.availability, s.offer_count, s.source_count, s.content_hash, 'active',
          :reconcile_run)
