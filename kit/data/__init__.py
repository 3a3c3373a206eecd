"""Layer 3 — input tables: the competition's CSV/parquet (:mod:`.ingest`), chosen/rejected
preference data (:mod:`.preference`), extra-data dedup (:mod:`.dedup`) and prompt-grouped folds."""
