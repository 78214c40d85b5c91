"""Automation: jobs, the catalog sensor, the nightly schedules and the refresh conditions.

- `model_catalog_sensor` (RUNNING by default): watches the model catalog (`$LG_MODEL_CATALOG` or
  `data_sources/models/models.yaml`), registers new models as `model` partitions and requests one run per missing
  (model, variant) gradient partition — after the variant's curated table, which it requests first. Each
  partition is requested once (run key); what fails is left to the schedule. Removing a model from the
  catalog never deletes a partition or its statistics.
- `curate_missing_nightly` (03:00, `LG_CURATE_CRON`) then `fill_missing_nightly` (03:30, `LG_FILL_CRON`), both
  RUNNING: whatever is still missing or failed (two schedules because a Dagster job holds assets of one
  partitioning only: curated tables are keyed by variant, statistics by model x variant).
- `layer_summary`, `figures`, `dynamics_figures` and `zero_shot_figures` refresh through declarative automation
  (`conditions`), evaluated by one sensor RUNNING by default, `refresh_results`, whose target is every asset with an
  automation condition (`sensors.refresh_sensor`).
- The daemon's lines about the `gpu` pool and the sensors are made readable and said once per change (`daemon_log`,
  through the run coordinator named in `deploy/local/dagster.yaml`).
"""
