"""Per-example gradient statistics, and the check that gates them."""
