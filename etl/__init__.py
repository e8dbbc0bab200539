"""The machinery the exercise scripts share: errors, settings, the DummyJSON client, field
validators, run bookkeeping and bulk writing. Nothing here imports an exercise script."""
