"""Exercise 4, built: multi-source reconciliation as an Apache Spark job on Apache Iceberg tables.

Snapshots of several sources are landed as-is (bronze), merged per source into one offers table
that skips unchanged offers and soft-deletes what a complete snapshot no longer has (silver),
reconciled into golden products by the numbered rules of ``data_at_scale_design.md`` (gold), and
only the golden products that changed are sent to the serving database. ``python -m
scale.reconcile --help`` runs it; ``python -m scale.generate --help`` makes sources to run it on.
The JVM dependencies are in ``scale/requirements.txt``, apart from the sync's.
"""
