"""SIM, MAE, AUC and aIoU on hand-computed maps."""

from __future__ import annotations

import numpy as np
import pytest

from ivlm_core.errors import InvalidInputError
from ivlm_core.metrics.affordance import (
    average_iou,
    evaluate_affordance,
    mean_absolute_error,
    roc_auc,
    similarity,
)

PRED = np.array([0.8, 0.6, 0.2, 0.0])
GT = np.array([1.0, 0.0, 0.6, 0.2])  # binarised at 0.5 -> [1, 0, 1, 0]


def test_sim_by_hand() -> None:
    # pred / 1.6 = [0.5, 0.375, 0.125, 0]; gt / 1.8 = [0.556, 0, 0.333, 0.111]; min sums to 0.5 + 0.125
    assert similarity(PRED, GT) == pytest.approx(0.625)
    assert similarity(GT, GT) == pytest.approx(1.0)
    assert similarity(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 0.0


def test_mae_by_hand() -> None:
    assert mean_absolute_error(PRED, GT) == pytest.approx((0.2 + 0.6 + 0.4 + 0.2) / 4)


def test_auc_by_hand() -> None:
    # positives score 0.8, 0.2; negatives 0.6, 0.0: pairs won 0.8>0.6, 0.8>0, 0.2>0 -> 3 of 4
    assert roc_auc(PRED, GT) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == pytest.approx(0.5)  # a tie counts half
    assert roc_auc(np.array([0.1, 0.9, 0.4]), np.array([0.0, 0.7, 0.5])) == pytest.approx(1.0)
    assert np.isnan(roc_auc(PRED, np.zeros(4)))


def test_aiou_by_hand() -> None:
    # thresholds k/19: k=0 -> all 4 predicted, IoU 2/4; k=1..3 (t <= 0.158) -> {0,1,2}, IoU 2/3;
    # k=4..11 (0.21 .. 0.58) -> {0,1}, IoU 1/3; k=12..15 (0.63 .. 0.79) -> {0}, IoU 1/2; k=16..19 -> {}, 0
    expected = (0.5 + 3 * 2 / 3 + 8 * 1 / 3 + 4 * 0.5 + 4 * 0.0) / 20
    assert average_iou(PRED, GT) == pytest.approx(expected)
    assert expected == pytest.approx(43 / 120)
    assert np.isnan(average_iou(PRED, np.ones(4)))


def test_dataset_means_skip_single_class_samples_for_auc_and_aiou() -> None:
    empty_gt_pred = np.array([0.1, 0.1, 0.0, 0.0])  # SIM 0 (GT sums to 0), MAE 0.2 / 4
    result = evaluate_affordance([PRED, empty_gt_pred], [GT, np.zeros(4)])
    assert result.num_samples == 2 and result.num_ranked_samples == 1
    assert result.sim == pytest.approx((0.625 + 0.0) / 2)
    assert result.mae == pytest.approx((0.35 + 0.05) / 2)
    assert result.auc == pytest.approx(0.75)
    assert result.aiou == pytest.approx(43 / 120)
    with pytest.raises(InvalidInputError):
        evaluate_affordance([PRED], [])
    with pytest.raises(InvalidInputError):
        similarity(PRED, GT[:3])
