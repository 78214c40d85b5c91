"""Per-layer summaries of every model, and the figures and tables drawn from them."""
