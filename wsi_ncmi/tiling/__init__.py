"""Stage 1: slides -> tiles. Tissue detection, the tile grid, quality control (pen, dark, folds, focus) and
thumbnails; `tile.py` runs a batch of slides."""
