"""Vertex-level contact metrics: per-sample precision/recall/F1 and the DAMON binary / semantic protocols.

Conventions (the same everywhere, so numbers are comparable with InteractVLM's evaluation):
* a predicted vertex is in contact when `pred >= threshold` (0.5), a ground-truth vertex when `gt > 0`;
* 0/0 counts as 0 (no predicted contact -> precision 0; no GT contact -> recall 0; F1 0 when P + R = 0).

DAMON *binary*: the object-wise samples of one image are merged (OR of the thresholded predictions, OR of the
GTs); F1 is the mean of per-image F1, precision/recall are micro-averages over all images' vertices.
DAMON *semantic*: every object-wise sample is scored on its own; means over all samples ("weighted" row),
per object, and per category. Unlike the reference evaluation (spec 8.2), precision and recall here are
computed on thresholded predictions, so they are real precisions and recalls (<= 1).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ivlm_core.errors import InvalidInputError

CONTACT_THRESHOLD = 0.5


@dataclass(frozen=True)
class ContactScores:
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class ContactCounts:
    """True positives, false positives and false negatives of one comparison."""

    tp: int
    fp: int
    fn: int

    def scores(self) -> ContactScores:
        precision = _ratio(self.tp, self.tp + self.fp)
        recall = _ratio(self.tp, self.tp + self.fn)
        return ContactScores(precision, recall, _f1(precision, recall))


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else 0.0


def _f1(precision: float, recall: float) -> float:
    return 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def binarize_prediction(pred: np.ndarray, threshold: float = CONTACT_THRESHOLD) -> np.ndarray:
    return np.asarray(pred) >= threshold


def binarize_gt(gt: np.ndarray) -> np.ndarray:
    return np.asarray(gt) > 0


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise InvalidInputError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    return pred, gt


def contact_counts(pred: np.ndarray, gt: np.ndarray, threshold: float = CONTACT_THRESHOLD) -> ContactCounts:
    """TP/FP/FN over all vertices of `pred` (probabilities) vs `gt` (labels), any matching shapes."""
    pred, gt = _check_pair(pred, gt)
    p, g = binarize_prediction(pred, threshold), binarize_gt(gt)
    return ContactCounts(int(np.sum(p & g)), int(np.sum(p & ~g)), int(np.sum(~p & g)))


def contact_scores(pred: np.ndarray, gt: np.ndarray, threshold: float = CONTACT_THRESHOLD) -> ContactScores:
    """Precision, recall and F1 of one sample (vertex vectors of equal length)."""
    return contact_counts(pred, gt, threshold).scores()


def per_sample_scores(preds: np.ndarray, gts: np.ndarray, threshold: float = CONTACT_THRESHOLD) -> np.ndarray:
    """(S, 3) array of [precision, recall, F1] for S samples given as (S, N) arrays."""
    preds, gts = _check_pair(preds, gts)
    if preds.ndim != 2:
        raise InvalidInputError(f"expected (samples, vertices) arrays, got shape {preds.shape}")
    p, g = binarize_prediction(preds, threshold), binarize_gt(gts)
    tp = np.sum(p & g, axis=1).astype(np.float64)
    fp = np.sum(p & ~g, axis=1)
    fn = np.sum(~p & g, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return np.stack([precision, recall, f1], axis=1)


@dataclass(frozen=True)
class DamonBinaryResult:
    f1: float  # mean of per-image F1
    precision: float  # micro-average over all images
    recall: float  # micro-average over all images
    num_images: int


def damon_binary_contact(preds: Sequence[np.ndarray] | np.ndarray, gts: Sequence[np.ndarray] | np.ndarray,
                         image_ids: Sequence[Hashable],
                         threshold: float = CONTACT_THRESHOLD) -> DamonBinaryResult:
    """DAMON binary contact: merge the object-wise samples of each image, then score per image."""
    preds, gts = np.asarray(preds), np.asarray(gts)
    _check_pair(preds, gts)
    if len(image_ids) != len(preds):
        raise InvalidInputError(f"{len(image_ids)} image ids for {len(preds)} samples")
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for index, image_id in enumerate(image_ids):
        groups[image_id].append(index)
    tp = fp = fn = 0
    image_f1 = []
    for indices in groups.values():
        p = np.any(binarize_prediction(preds[indices], threshold), axis=0)
        g = np.any(binarize_gt(gts[indices]), axis=0)
        counts = ContactCounts(int(np.sum(p & g)), int(np.sum(p & ~g)), int(np.sum(~p & g)))
        image_f1.append(counts.scores().f1)
        tp, fp, fn = tp + counts.tp, fp + counts.fp, fn + counts.fn
    micro = ContactCounts(tp, fp, fn).scores()
    return DamonBinaryResult(f1=float(np.mean(image_f1)) if image_f1 else 0.0, precision=micro.precision,
                             recall=micro.recall, num_images=len(groups))


@dataclass(frozen=True)
class GroupScores:
    scores: ContactScores  # means of the per-sample precision, recall and F1
    count: int


@dataclass(frozen=True)
class DamonSemanticResult:
    weighted: GroupScores  # over every sample (objects outside all categories included)
    per_object: dict[str, GroupScores] = field(default_factory=dict)
    per_category: dict[str, GroupScores] = field(default_factory=dict)


def _mean_scores(rows: np.ndarray) -> GroupScores:
    mean = rows.mean(axis=0)
    return GroupScores(ContactScores(float(mean[0]), float(mean[1]), float(mean[2])), len(rows))


def damon_semantic_contact(preds: Sequence[np.ndarray] | np.ndarray, gts: Sequence[np.ndarray] | np.ndarray,
                           object_names: Sequence[str],
                           category_mapping: Mapping[str, Sequence[str]] | None = None,
                           threshold: float = CONTACT_THRESHOLD) -> DamonSemanticResult:
    """DAMON semantic (object-wise) contact; `category_mapping` maps a category to its object names."""
    preds, gts = np.asarray(preds), np.asarray(gts)
    if len(object_names) != len(preds):
        raise InvalidInputError(f"{len(object_names)} object names for {len(preds)} samples")
    if len(preds) == 0:
        raise InvalidInputError("no samples to evaluate")
    rows = per_sample_scores(preds, gts, threshold)
    names = np.asarray(object_names)
    per_object = {str(name): _mean_scores(rows[names == name]) for name in dict.fromkeys(object_names)}
    per_category = {}
    for category, members in (category_mapping or {}).items():
        selected = np.isin(names, list(members))
        if selected.any():
            per_category[category] = _mean_scores(rows[selected])
    return DamonSemanticResult(weighted=_mean_scores(rows), per_object=per_object, per_category=per_category)


def reference_soft_precision_recall(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """The semantic P/R that InteractVLM's FIX.md reports (spec 6 / 8.2), for comparison only: NOT metrics.

    Overlap counts every vertex with any non-zero probability (`logical_and(pred, gt)`) while precision divides
    by the sum of probabilities, so precision can exceed 1 and recall is ~1 for any soft prediction.
    """
    pred, gt = _check_pair(pred, gt)
    pred, gt = pred.astype(np.float64), gt.astype(np.float64)
    overlap = float(np.sum(np.logical_and(pred, gt)))
    return _ratio(overlap, float(pred.sum())), _ratio(overlap, float(gt.sum()))
