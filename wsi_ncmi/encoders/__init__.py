"""Tile encoders (a registry where adding a model is one function) and the embedding loop."""
