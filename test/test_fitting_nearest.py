"""Incremental nearest-neighbour search: the same answers as a fresh k-d tree query, step after step."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from ivlm_core.fitting.nearest import TrackedNearest


def _fresh(tree: cKDTree, points: np.ndarray, reach: float) -> np.ndarray:
    _, index = tree.query(points, distance_upper_bound=reach)
    return np.where(index < tree.n, index, -1)


@pytest.mark.parametrize("reach", [np.inf, 0.03])
@pytest.mark.parametrize("step_m", [1e-4, 2e-3, 3e-2])
def test_answers_equal_a_fresh_query_while_the_points_move(reach, step_m):
    rng = np.random.default_rng(0)
    tree = cKDTree(rng.normal(size=(2000, 3)) * 0.05)
    points = rng.normal(size=(300, 3)) * 0.08  # some near the cloud, some beyond reach of it
    tracked = TrackedNearest(tree, k=4, reach=reach)
    for _ in range(30):
        np.testing.assert_array_equal(tracked.query(points), _fresh(tree, points, reach))
        points = points + rng.normal(size=points.shape) * step_m
    if step_m <= 2e-3:  # small steps are mostly answered from the candidates
        assert tracked.searched < 0.5 * 30 * len(points)


def test_a_different_point_count_starts_afresh_and_an_empty_tree_finds_nothing():
    rng = np.random.default_rng(1)
    tree = cKDTree(rng.normal(size=(50, 3)))
    tracked = TrackedNearest(tree, k=8)
    points = rng.normal(size=(20, 3))
    np.testing.assert_array_equal(tracked.query(points), _fresh(tree, points, np.inf))
    np.testing.assert_array_equal(tracked.query(points[:7]), _fresh(tree, points[:7], np.inf))
    empty = TrackedNearest(cKDTree(np.zeros((0, 3))), reach=0.1)
    np.testing.assert_array_equal(empty.query(points), -np.ones(20, dtype=np.int64))
