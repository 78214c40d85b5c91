"""Adapters: dataset sources and their catalog, model sources and their catalog (no Dagster here).

They implement the small interfaces the core defines (`lg_pipeline.curation.source`); the core never imports them.
"""
