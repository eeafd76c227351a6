"""Object affordance metrics on point clouds / meshes (the PIAD / LEMON / InteractVLM protocol).

* SIM: histogram intersection of the two maps after each is normalised to sum 1.
* MAE: sum |gt - pred| / N.
* AUC: ROC AUC of the prediction against the GT binarised at 0.5 (computed from ranks, i.e. the
  Mann-Whitney U statistic with tied scores counted half; equal to sklearn's `roc_auc_score`).
* aIoU: mean over thresholds linspace(0, 1, 20) of IoU(pred >= t, gt >= 0.5).
Samples whose binarised GT is all one class have no AUC/aIoU and are skipped for those two (as the reference
does); SIM and MAE use every sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from ivlm_core.errors import InvalidInputError

GT_BINARY_THRESHOLD = 0.5
AIOU_THRESHOLDS = np.linspace(0.0, 1.0, 20)
_EPS = 1e-12


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(gt, dtype=np.float64).ravel()
    if pred.shape != gt.shape or pred.size == 0:
        raise InvalidInputError(
            f"prediction and GT must be non-empty and equal in size, got {pred.size}, {gt.size}")
    return pred, gt


def similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """SIM = sum_i min(pred_i / sum(pred), gt_i / sum(gt)); 1 for identical shapes, 0 for disjoint maps."""
    pred, gt = _pair(pred, gt)
    return float(np.minimum(pred / (pred.sum() + _EPS), gt / (gt.sum() + _EPS)).sum())


def mean_absolute_error(pred: np.ndarray, gt: np.ndarray) -> float:
    pred, gt = _pair(pred, gt)
    return float(np.abs(gt - pred).sum() / gt.size)


def _binary_gt(gt: np.ndarray) -> np.ndarray:
    return gt >= GT_BINARY_THRESHOLD


def has_both_classes(gt: np.ndarray) -> bool:
    labels = _binary_gt(np.asarray(gt, dtype=np.float64).ravel())
    return bool(labels.any() and not labels.all())


def roc_auc(pred: np.ndarray, gt: np.ndarray) -> float:
    """ROC AUC of `pred` scores for the labels `gt >= 0.5`; NaN when the labels are all one class."""
    pred, gt = _pair(pred, gt)
    labels = _binary_gt(gt)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(pred)  # average ranks: ties contribute 1/2
    u = ranks[labels].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def average_iou(pred: np.ndarray, gt: np.ndarray, thresholds: np.ndarray = AIOU_THRESHOLDS) -> float:
    """Mean IoU of `pred >= t` with `gt >= 0.5` over the thresholds; NaN when the GT is all one class."""
    pred, gt = _pair(pred, gt)
    labels = _binary_gt(gt)
    if not labels.any() or labels.all():
        return float("nan")
    ious = []
    for t in thresholds:
        predicted = pred >= t
        ious.append((predicted & labels).sum() / (predicted | labels).sum())
    return float(np.mean(ious))


@dataclass(frozen=True)
class AffordanceResult:
    sim: float
    mae: float
    auc: float  # over samples with both classes in the GT
    aiou: float  # same samples as auc
    num_samples: int
    num_ranked_samples: int  # samples used for auc and aiou


def evaluate_affordance(preds: Sequence[np.ndarray] | np.ndarray,
                        gts: Sequence[np.ndarray] | np.ndarray) -> AffordanceResult:
    """Dataset means of the four metrics (AUC/aIoU skip single-class GT samples)."""
    if len(preds) != len(gts) or len(preds) == 0:
        raise InvalidInputError(
            f"need equally many (>0) predictions and GTs, got {len(preds)} and {len(gts)}")
    sims, maes, aucs, aious = [], [], [], []
    for pred, gt in zip(preds, gts):
        sims.append(similarity(pred, gt))
        maes.append(mean_absolute_error(pred, gt))
        if has_both_classes(gt):
            aucs.append(roc_auc(pred, gt))
            aious.append(average_iou(pred, gt))
    ranked = len(aucs)
    return AffordanceResult(sim=float(np.mean(sims)), mae=float(np.mean(maes)),
                            auc=float(np.mean(aucs)) if ranked else float("nan"),
                            aiou=float(np.mean(aious)) if ranked else float("nan"),
                            num_samples=len(sims), num_ranked_samples=ranked)
