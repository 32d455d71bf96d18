"""Exact polygons of a binary mask: the pixel edges between foreground and background, chained into rings.

Rings follow GeoJSON's right-hand rule in the coordinate numbers (shoelace area positive for exteriors, negative
for holes), are closed (first vertex repeated last), keep only corner vertices, and never cross: where two
foreground pixels meet only at a corner the ring is split there, so the pieces touch at that point at most.
"""

from __future__ import annotations

import itertools

import numpy as np

Ring = list[tuple[float, float]]


def signed_area(ring: Ring) -> float:
    """Shoelace area of a closed ring: positive when it runs counter-clockwise in (x, y) numbers."""
    x = np.asarray([p[0] for p in ring], dtype=float)
    y = np.asarray([p[1] for p in ring], dtype=float)
    return float(0.5 * np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def _edges(mask: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Boundary edges (start vertex -> end vertices, vertex = (x, y)) with the foreground on the right in image
    orientation (y down), which is counter-clockwise in (x, y) numbers for an outer boundary."""
    padded = np.pad(mask.astype(bool), 1)
    core = padded[1:-1, 1:-1]
    out: dict[tuple[int, int], list[tuple[int, int]]] = {}
    sides = (
        (padded[:-2, 1:-1], (0, 0), (1, 0)),  # background above: top edge, left to right
        (padded[1:-1, 2:], (1, 0), (1, 1)),  # background right: right edge, downwards
        (padded[2:, 1:-1], (1, 1), (0, 1)),  # background below: bottom edge, right to left
        (padded[1:-1, :-2], (0, 1), (0, 0)),  # background left: left edge, upwards
    )
    for neighbour, (sx, sy), (ex, ey) in sides:
        rows, cols = np.nonzero(core & ~neighbour)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            out.setdefault((c + sx, r + sy), []).append((c + ex, r + ey))
    return out


def _next(options: list[tuple[int, int]], start: tuple[int, int], direction: tuple[int, int]) -> tuple[int, int]:
    """At a vertex with two ways on, turn right (image orientation) so pixels meeting at a corner stay apart."""
    if len(options) == 1:
        return options.pop()
    right = (-direction[1], direction[0])
    for k, end in enumerate(options):
        if (end[0] - start[0], end[1] - start[1]) == right:
            return options.pop(k)
    return options.pop()


def _simple_pieces(path: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Split a closed vertex path (first vertex not repeated) at vertices it visits twice into simple loops."""
    pieces, stack, seen = [], [], {}
    for vertex in path:
        if vertex in seen:
            start = seen[vertex]
            loop = stack[start:]
            pieces.append(loop)
            for v in loop[1:]:
                seen.pop(v, None)
            del stack[start + 1 :]
        else:
            seen[vertex] = len(stack)
            stack.append(vertex)
    if len(stack) > 2:
        pieces.append(stack)
    return pieces


def _corners(loop: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Drop vertices where the ring goes straight on; returns a closed ring."""
    n = len(loop)
    kept = []
    for i in range(n):
        a, b, c = loop[i - 1], loop[i], loop[(i + 1) % n]
        if (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]) != 0:
            kept.append(b)
    return [*kept, kept[0]]


def mask_rings(mask: np.ndarray) -> list[Ring]:
    """Every boundary ring of `mask` in pixel-corner coordinates (x = column, y = row), closed, right-hand rule."""
    edges = _edges(mask)
    rings: list[Ring] = []
    while edges:
        start = next(iter(edges))
        path: list[tuple[int, int]] = []
        vertex, direction = start, (0, 0)
        while True:
            path.append(vertex)
            options = edges[vertex]
            end = _next(options, vertex, direction)
            if not options:
                del edges[vertex]
            direction, vertex = (end[0] - vertex[0], end[1] - vertex[1]), end
            if vertex == start:
                break
        for piece in _simple_pieces(path):
            rings.append([(float(x), float(y)) for x, y in _corners(piece)])
    return rings


def _inside(point: tuple[float, float], ring: Ring) -> bool:
    """Ray casting; `point` is a pixel centre, never on a ring's (integer) edges."""
    x, y = point
    inside = False
    for (x0, y0), (x1, y1) in itertools.pairwise(ring):
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def _hole_point(ring: Ring) -> tuple[float, float]:
    """The centre of the background pixel just left of the hole ring's first edge (inside the hole)."""
    (x0, y0), (x1, y1) = ring[0], ring[1]
    dx, dy = np.sign(x1 - x0), np.sign(y1 - y0)
    return x0 + 0.5 * dx + 0.5 * dy, y0 + 0.5 * dy - 0.5 * dx


def mask_polygons(mask: np.ndarray) -> list[list[Ring]]:
    """Polygons of `mask` (each: exterior ring then its holes), in pixel-corner coordinates."""
    rings = mask_rings(mask)
    shells = sorted((r for r in rings if signed_area(r) > 0), key=signed_area)
    polygons: dict[int, list[Ring]] = {i: [shell] for i, shell in enumerate(shells)}
    for hole in (r for r in rings if signed_area(r) < 0):
        point = _hole_point(hole)
        owner = next((i for i, shell in enumerate(shells) if _inside(point, shell)), None)
        if owner is not None:
            polygons[owner].append(hole)
    return [polygons[i] for i in sorted(polygons, key=lambda i: -signed_area(shells[i]))]


def union_polygons(coords: np.ndarray, size: int) -> list[list[Ring]]:
    """Exact polygons of the union of squares (top-left `coords`, side `size`), in the coordinates' own units."""
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    if len(coords) == 0:
        return []
    xs = np.unique(np.concatenate([coords[:, 0], coords[:, 0] + size]))
    ys = np.unique(np.concatenate([coords[:, 1], coords[:, 1] + size]))
    x0, x1 = np.searchsorted(xs, coords[:, 0]), np.searchsorted(xs, coords[:, 0] + size)
    y0, y1 = np.searchsorted(ys, coords[:, 1]), np.searchsorted(ys, coords[:, 1] + size)
    cover = np.zeros((len(ys) + 1, len(xs) + 1), dtype=np.int32)
    np.add.at(cover, (y0, x0), 1)
    np.add.at(cover, (y0, x1), -1)
    np.add.at(cover, (y1, x0), -1)
    np.add.at(cover, (y1, x1), 1)
    mask = cover.cumsum(0).cumsum(1)[: len(ys) - 1, : len(xs) - 1] > 0
    return [
        [[(float(xs[int(x)]), float(ys[int(y)])) for x, y in ring] for ring in polygon]
        for polygon in mask_polygons(mask)
    ]
