"""How many CPU cores this process may use, and the reader processes an embedding run starts from them."""

from __future__ import annotations

import os

from wsi_ncmi.core.device import uses_cuda

MAX_READERS = 16
"""More reader processes than this rarely help one GPU and cost memory (each holds its prefetched batches)."""


def cpu_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and batch schedulers set)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def auto_workers(device: str, cores: int | None = None) -> int:
    """Tile-reading processes for `embed --workers auto`.

    On a GPU the encoder outruns the CPU's JPEG decoding, so every core but the one feeding the GPU reads tiles
    (at most MAX_READERS). On a CPU the encoder is the slow part and shares the cores with the readers: one reader
    keeps up with it (a core decodes several hundred tiles/s; a CPU encoder embeds tens): one per 16 cores, 1 to 4.
    """
    cores = cpu_cores() if cores is None else cores
    if uses_cuda(device):
        return max(1, min(MAX_READERS, cores - 1))
    return max(1, min(4, cores // 16))


def parse_workers(value: str, device: str) -> int:
    """`--workers` as given: a whole number >= 0 (0 reads in the main process) or auto (auto_workers)."""
    if value.strip().lower() == "auto":
        return auto_workers(device)
    try:
        workers = int(value)
    except ValueError:
        workers = -1
    if workers < 0:
        raise ValueError(f"--workers {value!r}: give a whole number >= 0 or auto")
    return workers


def usable_cores() -> int:
    """This process's share of the cores it may run on (its CPU affinity, split between the training processes
    torchrun starts on this machine) that the 1-minute load average does not show as busy."""
    cores = cpu_cores()
    try:
        busy = round(os.getloadavg()[0])
    except OSError:
        busy = 0
    return max(1, (cores - busy) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
