"""Per-layer curves, MAD summaries, tables, figures and the report of them (no Dagster here)."""
