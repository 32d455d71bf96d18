"""Runs inside the throw-away peer venv (torchmil); prints one JSON object. Not a project module.

hs2p is timed through its own command line (`python -m hs2p`), as users run it."""

from __future__ import annotations

import json
import sys
import time


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
    print(json.dumps(torchmil_train(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))))
