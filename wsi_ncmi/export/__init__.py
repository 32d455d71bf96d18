"""Exports of results into other tools' formats (QuPath GeoJSON)."""
