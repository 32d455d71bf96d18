"""wsi-ncmi: whole-slide images to slide-level predictions, with MIL aggregators trained by NCMI."""

__version__ = "0.1.0"
