"""Geodesic contact error on a hand-checkable triangle strip and on the synthetic body."""

from __future__ import annotations

import numpy as np
import pytest

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.metrics.geodesic import (
    GeodesicDistance,
    geodesic_error,
    mean_geodesic_error,
    mesh_edge_graph,
    reference_logged_geodesic_error,
)
from ivlm_core.testing.synthetic_body import build_synthetic_model

# Strip of unit squares: bottom row b0..b3 = vertices 0..3 at y=0, top row t0..t3 = 4..7 at y=1.
# Triangles (b_i, b_i+1, t_i), (b_i+1, t_i+1, t_i): diagonals join b_i+1 and t_i (length sqrt 2).
STRIP_V = np.array([[x, y, 0.0] for y in (0, 1) for x in range(4)], dtype=float)
STRIP_F = np.array([f for i in range(3) for f in ((i, i + 1, 4 + i), (i + 1, 5 + i, 4 + i))])
B0, B3, T0, T3 = 0, 3, 4, 7


@pytest.fixture(scope="module")
def strip() -> GeodesicDistance:
    return GeodesicDistance.from_mesh(STRIP_V, STRIP_F)


def test_edge_graph_and_distances_by_hand(strip) -> None:
    graph = mesh_edge_graph(STRIP_V, STRIP_F)
    assert graph.nnz == 2 * 13  # 3+3 horizontal, 4 vertical, 3 diagonal edges, both directions
    assert graph[1, 4] == pytest.approx(np.sqrt(2))
    rows = strip.rows([B0, T0])
    assert rows[0, B3] == pytest.approx(3.0)
    assert rows[0, T3] == pytest.approx(4.0)  # diagonals point backwards: no shortcut
    assert rows[1, B3] == pytest.approx(np.sqrt(2) + 2)  # t0 -> b1 -> b2 -> b3
    np.testing.assert_allclose(strip.full_matrix()[[B0, T0]], rows, rtol=1e-6)


def test_error_directions_by_hand(strip) -> None:
    gt = np.zeros(8)
    gt[B0] = 1
    pred = np.zeros(8)
    pred[B3], pred[T0] = 1.0, 0.6
    # pred -> GT: b3 is 3 from b0, t0 is 1 from b0 -> (3 + 1) / 2
    assert geodesic_error(pred, gt, strip) == pytest.approx(2.0)
    # GT -> pred: b0's nearest predicted vertex is t0 at 1
    assert geodesic_error(pred, gt, strip, direction="gt_to_pred") == pytest.approx(1.0)
    # the reference's logged number: GT -> {pred == 1} = {b3} -> 3
    assert reference_logged_geodesic_error(pred, gt, strip) == pytest.approx(3.0)
    # perfect prediction and empty sets
    assert geodesic_error(gt, gt, strip) == 0.0
    assert geodesic_error(np.zeros(8), gt, strip) == 0.0
    assert np.isnan(geodesic_error(pred, np.zeros(8), strip))
    # the middle sample (no GT contact) is undefined and skipped
    mean = mean_geodesic_error([pred, pred, gt], [gt, np.zeros(8), gt], strip)
    assert mean == pytest.approx((2.0 + 0.0) / 2)
    with pytest.raises(InvalidInputError):
        geodesic_error(pred, gt, strip, direction="both")
    with pytest.raises(InvalidInputError):
        geodesic_error(pred[:5], gt[:5], strip)


def test_precomputed_matrix_is_memory_mapped(strip, tmp_path) -> None:
    path = tmp_path / "geo.npy"
    np.save(path, strip.full_matrix())
    from_file = GeodesicDistance.from_matrix(path)
    pred = np.array([0, 0, 0, 0.9, 0.7, 0, 0, 0])
    gt = np.array([1, 0, 0, 0, 0, 0, 0, 1])
    for direction in ("pred_to_gt", "gt_to_pred"):
        assert geodesic_error(pred, gt, from_file, direction=direction) == pytest.approx(
            geodesic_error(pred, gt, strip, direction=direction), rel=1e-6)
    with pytest.raises(MissingAssetError):
        GeodesicDistance.from_matrix(tmp_path / "missing.npy")


def test_set_distance_equals_min_of_rows_on_a_body() -> None:
    model = build_synthetic_model("smplh")
    geo = GeodesicDistance.from_mesh(model["v_template"], model["f"])
    sources = np.array([3, 400, 1200])
    np.testing.assert_allclose(geo.distance_to_set(sources), geo.rows(sources, chunk=2).min(axis=0))
    d = geo.rows([0])[0]
    assert np.isfinite(d).all()  # one connected surface
    euclid = np.linalg.norm(model["v_template"] - model["v_template"][0], axis=1)
    assert np.all(d >= euclid - 1e-9)  # a path is never shorter than the straight line
