"""Cohorts: manifests, their validation, splits and CAMELYON-17 helpers."""
