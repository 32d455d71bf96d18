"""Opening slides, resolving microns per pixel, tissue masks and tile grids."""
