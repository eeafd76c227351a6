"""Exact nearest neighbours of points that move a little between queries (an optimiser's steps).

A k-d tree query costs microseconds per point, and a fit asks again for the same points every step after they
moved by a fraction of a millimetre. :class:`TrackedNearest` keeps each point's ``k`` nearest tree points from its
last search and answers from them while that is provably exact: a tree point outside the candidates was at least
``bound`` from the point where it was searched, so after the point moved by ``e`` it is at least ``bound - e``
away, and a candidate nearer than that is the nearest. Only the points that moved too far are searched again.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


class TrackedNearest:
    """Index of the tree point nearest each query point, ``-1`` beyond ``reach``: the same answers as
    ``tree.query(points, distance_upper_bound=reach)`` (up to exact ties), for points that move between calls.

    k: candidates kept per point (more: fewer searches again, each a little dearer). slack: extra distance
    searched beyond ``reach``, so a point far from every tree point stays answered until it moved that much.
    """

    def __init__(self, tree: cKDTree, k: int = 4, reach: float = np.inf, slack: float = 0.01) -> None:
        self.tree = tree
        self.data = np.asarray(tree.data)
        self.k = max(1, min(int(k), len(self.data)))
        self.reach = float(reach)
        self.search_radius = self.reach + slack if np.isfinite(self.reach) else np.inf
        self._origin: np.ndarray | None = None  # (N,3) where each point was last searched
        self._candidates = np.zeros((0, self.k), dtype=np.int64)  # (N,k), len(data) where fewer were found
        self._bound = np.zeros(0)  # (N,) no other tree point was nearer the origin than this
        self.searched = 0  # points searched in the tree so far (a figure for benchmarks and tests)

    def query(self, points: np.ndarray) -> np.ndarray:
        """(N,) int64 indices for (N,3) points; a different N than the last call starts afresh."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        if len(self.data) == 0:
            return np.full(len(points), -1, dtype=np.int64)
        if self._origin is None or len(self._origin) != len(points):
            self._origin = points.copy()
            self._candidates = np.full((len(points), self.k), len(self.data), dtype=np.int64)
            self._bound = np.zeros(len(points))
            return self._search(np.arange(len(points)), points)
        moved = np.linalg.norm(points - self._origin, axis=1)
        found = self._candidates < len(self.data)
        offset = points[:, None] - self.data[np.minimum(self._candidates, len(self.data) - 1)]
        distance = np.where(found, np.linalg.norm(offset, axis=2), np.inf)
        best = distance.argmin(axis=1)
        nearest = distance[np.arange(len(points)), best]
        # exact when the best candidate beats every tree point outside the candidates (at least bound - moved
        # away), or when none is within reach and neither can any other be
        margin = self._bound - moved - 1e-9
        exact = np.where(nearest < self.reach, nearest <= margin, margin >= self.reach)
        index = np.where(nearest < self.reach, self._candidates[np.arange(len(points)), best], -1)
        stale = np.nonzero(~exact)[0]
        if len(stale):
            self._origin[stale] = points[stale]
            index[stale] = self._search(stale, points[stale])
        return index

    def _search(self, rows: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Search ``points`` (the rows ``rows``) in the tree; returns their answers and keeps their candidates."""
        self.searched += len(rows)
        distance, candidates = self.tree.query(points, k=self.k, distance_upper_bound=self.search_radius)
        distance = np.asarray(distance).reshape(len(rows), self.k)
        candidates = np.asarray(candidates, dtype=np.int64).reshape(len(rows), self.k)
        self._candidates[rows] = candidates
        # all k found: nothing else is nearer than the k-th; fewer: nothing else is within the search radius
        self._bound[rows] = np.where(np.isfinite(distance[:, -1]), distance[:, -1], self.search_radius)
        return np.where(distance[:, 0] < self.reach, candidates[:, 0], -1)
