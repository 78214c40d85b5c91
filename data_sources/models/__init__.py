"""Model sources (packaged GGUF, hub, local folder), the model catalog (models.yaml), its registry and loading."""
