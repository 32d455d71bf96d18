"""The QC checks by name, in the order they were registered: the order of the QC table's area columns, of the
thumbnail legend's removals and of the messages that name them. The table alone sits at the bottom of the package
(it names no check class), so the settings can read it (params.py: the fingerprint leaves out optional checks)
while the check kinds (base.py) are typed with the settings."""

from wsi_ncmi.core.registry import Registry

CHECKS: Registry = Registry("QC check")
