"""Metrics, prediction tables, plots and reports."""
