"""Runs inside the throw-away peer venv (hs2p, torchmil); prints one JSON object. Not a project module."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def hs2p_tile(slide: str, spacing: float, size: int, min_tissue: float, warm_runs: int) -> dict:
    """hs2p's tile_slide on one slide: the first call's time (cold) and `warm_runs` more calls in the same process."""
    from dataclasses import replace

    from hs2p.api import DEFAULT_MASK_SAMPLING, SegmentationConfig, SlideSpec, TilingConfig, tile_slide

    spec = SlideSpec(sample_id=Path(slide).stem, image_path=Path(slide))
    config = TilingConfig(requested_spacing_um=spacing, requested_tile_size_px=size, tolerance=0.05, overlap=0.0)
    segmentation = SegmentationConfig(method="otsu")
    masks = replace(DEFAULT_MASK_SAMPLING, min_coverage={"tissue": min_tissue})
    seconds = []
    for _ in range(1 + warm_runs):
        start = time.perf_counter()
        result = tile_slide(spec, tiling=config, segmentation=segmentation, masks=masks)
        seconds.append(time.perf_counter() - start)
    tiles = result.tiles
    return {
        "cold_seconds": seconds[0],
        "warm_seconds": seconds[1:],
        "coords": [[int(x), int(y)] for x, y in zip(tiles.x, tiles.y, strict=True)],
        "tile_size_lv0": int(tiles.tile_size_lv0),
        "min_tissue_fraction": float(tiles.min_tissue_fraction),
        "version": __import__("importlib.metadata").metadata.version("hs2p"),
    }


def torchmil_train(data: str, steps: int, lr: float, seed: int) -> dict:
    import numpy as np
    import torch
    from torchmil.models import ABMIL

    bundle = np.load(data)
    torch.manual_seed(seed)
    model = ABMIL(in_shape=(bundle["x0"].shape[1],), att_dim=128, gated=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    n_train = int(bundle["n_train"])
    times = []
    for step in range(steps):
        i = step % n_train
        x = torch.from_numpy(bundle[f"x{i}"])[None]
        y = torch.tensor([float(bundle["y"][i])])
        start = time.perf_counter()
        _, losses = model.compute_loss(y, x)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(n_train, len(bundle["y"])):
            logit = model(torch.from_numpy(bundle[f"x{i}"])[None])
            logit = logit[0] if isinstance(logit, tuple) else logit
            correct += int((float(logit.reshape(-1)[0]) > 0) == bool(bundle["y"][i]))
    return {
        "step_seconds": sorted(times)[len(times) // 2],
        "val_accuracy": correct / (len(bundle["y"]) - n_train),
        "parameters": sum(p.numel() for p in model.parameters()),
        "version": __import__("importlib.metadata").metadata.version("torchmil"),
    }


if __name__ == "__main__":
    task = sys.argv[1]
    if task == "hs2p":
        print(
            json.dumps(
                hs2p_tile(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
            )
        )
    else:
        print(json.dumps(torchmil_train(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))))
