"""Stage 2: tiles -> feature bags: tile encoders (a registry where adding a model is one function), stain
normalisation, and the embedding loop.

Importing the package puts the Hugging Face hub offline before any hub library (huggingface_hub, timm) is imported,
since huggingface_hub reads HF_HUB_OFFLINE once, at import: weights come from the local cache, and only
`--allow-download` lets a download through (weights.hub_online).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
