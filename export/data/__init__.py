"""Data for the exporter: synthesised keyword speech and folder-per-label datasets."""
