"""Dataset sources (adapters behind `lg_pipeline.curation.source`) and the dataset catalog (datasets.yaml)."""
