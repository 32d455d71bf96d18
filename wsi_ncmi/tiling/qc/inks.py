"""The marker inks QC knows: their hue bands and which are looked for by default. Shared by the pen check and the
settings that list inks (qc.pen_colors), so both stand on this one module."""

PEN_HUES = {"blue": (185.0, 235.0), "green": (70.0, 175.0), "red": (348.0, 15.0)}
"""Hue bands (degrees, HSV) of marker inks; H&E's pinks and purples lie between 250 and 345 degrees."""
PEN_COLORS = ("blue", "green", "red", "black")
DEFAULT_PEN_COLORS = ("blue", "green", "black")
"""Red is looked for only on request: haemorrhage (dense red blood cells) reaches red ink's colour at the mask's
resolution, and removing it silently costs more than keeping a red stroke."""
RED_MIN_SATURATION = 0.6
"""Red ink needs more saturation than the other hues: eosin-rich tissue reaches the red band at lower saturation."""
