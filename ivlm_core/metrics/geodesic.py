"""Geodesic contact error on a body mesh, with the arguments the right way round.

Distances are shortest paths along mesh edges (Dijkstra on the edge graph weighted by edge length), the same
approximation as the `smpl_neutral_geodesic_dist.npy` matrix the reference loads. Nothing here builds the
full 6890 x 6890 matrix (380 MB): the error needs, per sample, the distance of every vertex to the nearest
vertex of a set, which is ONE multi-source Dijkstra run. Precomputed matrices (e.g. the reference .npy,
memory-mapped) are accepted too.

Directions, for binary contact sets P (prediction >= threshold) and G (ground truth > 0):
* `pred_to_gt` (default, the metric DECO/InteractVLM mean to report): mean over p in P of min_g d(p, g).
  It measures how far false-positive contact lies from the true contact; 0 if P is inside G.
* `gt_to_pred`: mean over g in G of min_p d(g, p); measures missed contact.
The reference (`evaluate.py:128`, spec 8.2) calls `get_h_geo_metric(gt, pred)` with swapped arguments and
picks "predicted" vertices by `== 1` on soft probabilities, so its logged "Geo" is gt_to_pred over only the
vertices whose probability is exactly 1.0. `reference_logged_geodesic_error` reproduces that number for comparison.
Empty sets: no predicted contact gives 0 for pred_to_gt (nothing to penalise) and NaN for gt_to_pred;
no GT contact gives NaN for pred_to_gt when P is non-empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.metrics.contact import CONTACT_THRESHOLD, binarize_gt, binarize_prediction

DIRECTIONS = ("pred_to_gt", "gt_to_pred")


def mesh_edge_graph(vertices: np.ndarray, faces: np.ndarray) -> sp.csr_matrix:
    """Symmetric (N, N) sparse matrix of edge lengths of a triangle mesh."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise InvalidInputError(
            f"expected vertices (N, 3) and faces (F, 3), got {vertices.shape}, {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise InvalidInputError("faces index vertices that do not exist")
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    edges = edges[edges[:, 0] != edges[:, 1]]
    lengths = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)
    n = len(vertices)
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    graph = sp.coo_matrix((np.concatenate([lengths, lengths]), (rows, cols)), shape=(n, n))
    return graph.tocsr()


class GeodesicDistance:
    """Vertex-to-vertex geodesic distances of one mesh, computed on demand (or read from a matrix)."""

    def __init__(self, graph: sp.csr_matrix | None = None, matrix: np.ndarray | None = None) -> None:
        if (graph is None) == (matrix is None):
            raise InvalidInputError("give exactly one of an edge graph or a distance matrix")
        self._graph = graph
        self._matrix = matrix
        self.num_vertices = int((graph if graph is not None else matrix).shape[0])

    @classmethod
    def from_mesh(cls, vertices: np.ndarray, faces: np.ndarray) -> GeodesicDistance:
        return cls(graph=mesh_edge_graph(vertices, faces))

    @classmethod
    def from_matrix(cls, matrix: np.ndarray | str | Path) -> GeodesicDistance:
        """A precomputed (N, N) matrix; a path (.npy) is memory-mapped, so only the rows used are read."""
        if isinstance(matrix, (str, Path)):
            path = Path(matrix)
            if not path.is_file():
                raise MissingAssetError(
                    "geodesic distance matrix", path,
                    "Copy data/smpl_neutral_geodesic_dist.npy from the InteractVLM data.zip, or use "
                    "GeodesicDistance.from_mesh(vertices, faces)")
            matrix = np.load(path, mmap_mode="r")
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise InvalidInputError(f"geodesic matrix must be square, got shape {matrix.shape}")
        return cls(matrix=matrix)

    def rows(self, sources: Sequence[int] | np.ndarray, chunk: int = 256) -> np.ndarray:
        """(len(sources), N) distances from each source vertex; computed `chunk` rows at a time."""
        sources = np.asarray(sources, dtype=np.int64).ravel()
        if self._matrix is not None:
            return np.asarray(self._matrix[sources], dtype=np.float64)
        out = np.empty((len(sources), self.num_vertices))
        for start in range(0, len(sources), chunk):
            part = sources[start:start + chunk]
            out[start:start + len(part)] = dijkstra(self._graph, directed=False, indices=part)
        return out

    def distance_to_set(self, vertex_set: np.ndarray) -> np.ndarray:
        """(N,) distance of every vertex to the nearest vertex of `vertex_set` (ids or a boolean mask)."""
        ids = _as_ids(vertex_set, self.num_vertices)
        if len(ids) == 0:
            return np.full(self.num_vertices, np.inf)
        if self._matrix is not None:
            return np.asarray(self._matrix[ids], dtype=np.float64).min(axis=0)
        return dijkstra(self._graph, directed=False, indices=ids, min_only=True)

    def full_matrix(self) -> np.ndarray:
        """All pairs (N, N) float32; only sensible for small meshes or to write a cache once."""
        if self._matrix is not None:
            return np.asarray(self._matrix, dtype=np.float32)
        return dijkstra(self._graph, directed=False).astype(np.float32)


def _as_ids(vertex_set: np.ndarray, num_vertices: int) -> np.ndarray:
    vertex_set = np.asarray(vertex_set)
    if vertex_set.dtype == bool:
        if vertex_set.shape != (num_vertices,):
            raise InvalidInputError(f"mask must have {num_vertices} entries, got {vertex_set.shape}")
        return np.flatnonzero(vertex_set)
    return vertex_set.astype(np.int64).ravel()


def _directed_error(source_mask: np.ndarray, target_mask: np.ndarray, geodesic: GeodesicDistance,
                    empty_source: float) -> float:
    if not source_mask.any():
        return empty_source
    if not target_mask.any():
        return float("nan")
    return float(geodesic.distance_to_set(target_mask)[source_mask].mean())


def geodesic_error(pred: np.ndarray, gt: np.ndarray, geodesic: GeodesicDistance,
                   threshold: float = CONTACT_THRESHOLD, direction: str = "pred_to_gt") -> float:
    """Mean geodesic distance (mesh units, metres for SMPL) between contact sets of one sample."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != (geodesic.num_vertices,) or gt.shape != pred.shape:
        raise InvalidInputError(f"pred and gt must be ({geodesic.num_vertices},) vectors, got {pred.shape}, "
                                f"{gt.shape}")
    p, g = binarize_prediction(pred, threshold), binarize_gt(gt)
    if direction == "pred_to_gt":
        return _directed_error(p, g, geodesic, empty_source=0.0)
    if direction == "gt_to_pred":
        return _directed_error(g, p, geodesic, empty_source=float("nan"))
    raise InvalidInputError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


def mean_geodesic_error(preds: np.ndarray, gts: np.ndarray, geodesic: GeodesicDistance,
                        threshold: float = CONTACT_THRESHOLD, direction: str = "pred_to_gt") -> float:
    """Mean over samples of `geodesic_error`, skipping undefined (NaN) samples."""
    errors = [geodesic_error(p, g, geodesic, threshold, direction) for p, g in zip(preds, gts)]
    valid = [e for e in errors if not np.isnan(e)]
    return float(np.mean(valid)) if valid else float("nan")


def reference_logged_geodesic_error(pred: np.ndarray, gt: np.ndarray, geodesic: GeodesicDistance) -> float:
    """What InteractVLM's evaluation logs as "Geo" (for comparison only): GT -> {pred == 1} distances."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    return _directed_error(gt == 1, pred == 1, geodesic, empty_source=0.0)
