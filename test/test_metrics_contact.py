"""Contact F1 / precision / recall and the DAMON binary and semantic protocols, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from ivlm_core.errors import InvalidInputError
from ivlm_core.metrics.contact import (
    contact_counts,
    contact_scores,
    damon_binary_contact,
    damon_semantic_contact,
    per_sample_scores,
    reference_soft_precision_recall,
)


def test_single_sample_by_hand() -> None:
    pred = np.array([0.9, 0.6, 0.4, 0.1, 0.5])
    gt = np.array([1, 0, 1, 0, 0])
    # pred >= 0.5 -> [1,1,0,0,1]; TP = {0}, FP = {1,4}, FN = {2}
    assert contact_counts(pred, gt) == type(contact_counts(pred, gt))(tp=1, fp=2, fn=1)
    scores = contact_scores(pred, gt)
    assert scores.precision == pytest.approx(1 / 3)
    assert scores.recall == pytest.approx(1 / 2)
    assert scores.f1 == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))  # = 0.4
    assert scores.f1 == pytest.approx(0.4)
    # threshold is inclusive: the 0.5 vertex counts; at 0.55 it does not -> P = 1/2
    assert contact_scores(pred, gt, threshold=0.55).precision == pytest.approx(0.5)


def test_empty_sets_score_zero() -> None:
    none = contact_scores(np.array([0.1, 0.2]), np.array([1, 0]))
    assert (none.precision, none.recall, none.f1) == (0.0, 0.0, 0.0)
    no_gt = contact_scores(np.array([0.9, 0.2]), np.array([0, 0]))
    assert (no_gt.precision, no_gt.recall, no_gt.f1) == (0.0, 0.0, 0.0)
    with pytest.raises(InvalidInputError):
        contact_scores(np.zeros(3), np.zeros(4))


def test_per_sample_matches_single_sample() -> None:
    rng = np.random.default_rng(0)
    preds, gts = rng.uniform(size=(6, 40)), rng.uniform(size=(6, 40)) > 0.7
    rows = per_sample_scores(preds, gts)
    for row, p, g in zip(rows, preds, gts):
        s = contact_scores(p, g)
        np.testing.assert_allclose(row, [s.precision, s.recall, s.f1])


def test_damon_binary_by_hand() -> None:
    preds = np.array([
        [0.9, 0.2, 0.1, 0.3],  # image A, object 1 (0.3 must not count: threshold before the union)
        [0.1, 0.7, 0.0, 0.0],  # image A, object 2
        [0.6, 0.6, 0.6, 0.6],  # image B
    ])
    gts = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0]])
    result = damon_binary_contact(preds, gts, image_ids=["A", "A", "B"])
    # A: pred union [1,1,0,0], gt union [1,0,1,0] -> TP 1, FP 1, FN 1 -> F1 0.5
    # B: TP 2, FP 2, FN 0 -> P 0.5, R 1, F1 2/3
    assert result.num_images == 2
    assert result.f1 == pytest.approx((0.5 + 2 / 3) / 2)  # 7/12
    assert result.precision == pytest.approx(3 / 6)  # micro: (1+2) / (1+1+2+2)
    assert result.recall == pytest.approx(3 / 4)  # micro: (1+2) / (1+2+1+0)
    with pytest.raises(InvalidInputError):
        damon_binary_contact(preds, gts, image_ids=["A"])


def test_damon_semantic_by_hand() -> None:
    preds = np.array([
        [0.9, 0.6, 0.4, 0.1, 0.5],  # chair: P 1/3, R 1/2, F1 0.4
        [0.8, 0.8, 0.0, 0.0, 0.0],  # chair: P 1, R 1, F1 1
        [0.0, 0.0, 0.0, 0.0, 0.7],  # cup:   P 0, R 0, F1 0
    ])
    gts = np.array([[1, 0, 1, 0, 0], [1, 1, 0, 0, 0], [0, 0, 0, 1, 0]])
    mapping = {"furniture": ["chair", "sofa"], "kitchen": ["cup"], "sports": ["ball"]}
    result = damon_semantic_contact(preds, gts, ["chair", "chair", "cup"], mapping)
    assert result.weighted.count == 3
    assert result.weighted.scores.precision == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert result.weighted.scores.recall == pytest.approx((0.5 + 1 + 0) / 3)
    assert result.weighted.scores.f1 == pytest.approx((0.4 + 1 + 0) / 3)
    chair = result.per_object["chair"]
    assert chair.count == 2 and chair.scores.f1 == pytest.approx(0.7)
    assert chair.scores.precision == pytest.approx(2 / 3) and chair.scores.recall == pytest.approx(0.75)
    assert result.per_category["furniture"] == chair
    assert result.per_category["kitchen"].scores.f1 == 0.0
    assert "sports" not in result.per_category  # no samples of that category
    # thresholded precision is a real precision (the reference's soft version can exceed 1)
    assert all(g.scores.precision <= 1.0 for g in result.per_object.values())


def test_reference_soft_numbers_are_reproduced_and_differ() -> None:
    pred = np.array([0.3, 0.2, 0.1, 0.05])
    gt = np.array([1, 1, 1, 0])
    # overlap counts 3 non-zero GT-contact vertices; sum(pred) = 0.65 -> "precision" 3 / 0.65 > 1
    precision, recall = reference_soft_precision_recall(pred, gt)
    assert precision == pytest.approx(3 / 0.65) and precision > 1
    assert recall == pytest.approx(1.0)
    thresholded = contact_scores(pred, gt)  # nothing reaches 0.5: no predicted contact at all
    assert (thresholded.precision, thresholded.recall) == (0.0, 0.0)
