"""Per-example gradient statistics: studied matrices, encoding, hooks, exact spectra, the resumable runner."""
