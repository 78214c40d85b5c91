"""Curated datasets: one table per variant, and the data-quality checks on it."""
