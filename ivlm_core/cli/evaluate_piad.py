"""`ivlm eval --format piad`: InteractVLM's object-affordance evaluation (spec section 6) on a PIAD split you supply.

Per sample (a photo paired with a point cloud): the affordance model is asked about the object in the photo, SAM
decodes heat maps on 4 renders of the point cloud, and the heat maps are lifted to the points (spec 3.3,
`ivlm_core.geometry.point_lifting`). The renders and pixel->point maps are the ones InteractVLM ships with its
PIAD data when found next to the photos (`--point-maps auto|shipped`), else ivlm splats the point cloud itself
(`ivlm_core.geometry.point_splat`, see there how that differs). Metrics against the point file's affordance
column: SIM, MAE, AUC and aIoU (`ivlm_core.metrics.affordance`; samples whose GT binarised at 0.5 is one class
have no AUC/aIoU), overall and per affordance class.

`--inference-type forward` teacher-forces the reference's answer 'The affordance type is <GT>, and the contact
region is [SEG].' (its `forward` path, the only one that gives its PIAD numbers: spec 8.2); `generate` lets the
model answer (what a robot gets). Files in --out: `metrics.json`, `samples.csv`, `predictions.npz`.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ivlm_core.cli.eval_files import read_predictions, write_results
from ivlm_core.errors import InvalidInputError, MissingAssetError


# ------------------------------------------------------------------------------------------------ inputs
def missing_shipped_error(path: Path) -> MissingAssetError:
    return MissingAssetError(
        "InteractVLM PIAD render/map", path,
        "Unpack the renders shipped with InteractVLM's PIAD data (rendered_points_heatmap_1025_color/) or use "
        "--point-maps ivlm (ivlm splats the point cloud itself).",
    )


def point_inputs(sample, points: np.ndarray, point_maps: str, render_size: int, view_names: tuple[str, ...],
                 cache: OrderedDict) -> tuple[np.ndarray, Any, str]:
    """(renders (V,H,W,3) uint8, PointMaps, 'shipped'|'ivlm') of one sample."""
    from ivlm_core.datasets.frames import read_image
    from ivlm_core.geometry.point_lifting import PointMaps
    from ivlm_core.geometry.point_splat import render_point_views

    missing = sample.missing_shipped_files(view_names) if point_maps != "ivlm" else []
    if point_maps == "shipped" and missing:
        raise missing_shipped_error(missing[0])
    if point_maps != "ivlm" and not missing:
        renders = np.stack([read_image(sample.shipped_file("sam", v)) for v in view_names])
        maps = PointMaps.from_p2pmap_files([sample.shipped_file("p2pmap", v) for v in view_names], len(points))
        return renders, maps, "shipped"
    key = (str(sample.point_path), render_size)
    if key not in cache:
        cache[key] = render_point_views(points, image_size=render_size)
        while len(cache) > 4:
            cache.popitem(last=False)
    renders, maps = cache[key]
    return renders, maps, "ivlm"


def predict_samples(args: argparse.Namespace, samples: list, points: list[np.ndarray]) -> dict[str, Any]:
    """Run the affordance model on every sample (progress bar); an answer without mask token predicts 0."""
    from ivlm_core.cli.predict import ContactPredictor
    from ivlm_core.datasets.frames import read_image
    from ivlm_core.geometry.point_splat import POINT_RENDER_DIST
    from ivlm_core.progress import ProgressReporter

    if args.checkpoint is None:
        raise InvalidInputError("ivlm eval needs --checkpoint (or --predictions to re-score an earlier run)")
    args.task = "point_affordance"  # no human renders, no mesh
    model = ContactPredictor(args).model
    views = tuple(v.name for v in _object_views(model.object_view_set))
    preds, found, texts, sources = [], [], [], []
    cache: OrderedDict = OrderedDict()
    with ProgressReporter("eval (PIAD)", len(samples), unit="sample") as progress:
        for sample, pts in zip(samples, points):
            renders, maps, source = point_inputs(sample, pts, args.point_maps, args.render_size, views, cache)
            result = model.predict_point_affordance(
                read_image(sample.image_path), sample.query, renders, maps, template=args.template,
                answer_affordance=sample.affordance if args.inference_type == "forward" else None,
                cam_distance=args.object_cam_distance or POINT_RENDER_DIST, max_new_tokens=args.max_new_tokens,
            )
            texts.append(result.language.text)
            found.append(bool(result.found))
            preds.append(result.affordance if result.found else np.zeros(len(pts), np.float32))
            sources.append(source)
            progress.advance(1)
    return {"pred": preds, "found": found, "text": texts, "maps": sources}


def _object_views(view_set: str):
    from ivlm_core.geometry.views import get_view_set

    return get_view_set(view_set)


def _keys(samples: list) -> list[str]:
    return [f"{s.image_path.name}|{s.point_path.name}" for s in samples]


def load_predictions(path: Path, samples: list, points: list[np.ndarray]) -> dict[str, Any]:
    loaded = read_predictions(path, {"pred", "offsets", "sample"}, "ivlm eval --format piad")
    if loaded["sample"].tolist() != _keys(samples):
        raise InvalidInputError(f"'{path}' holds predictions for other samples than the dataset's {len(samples)}")
    offsets = loaded["offsets"]
    preds = [loaded["pred"][offsets[i]:offsets[i + 1]] for i in range(len(samples))]
    wrong = [i for i, (p, q) in enumerate(zip(preds, points)) if len(p) != len(q)]
    if wrong:
        raise InvalidInputError(f"'{path}': sample {wrong[0]} has {len(preds[wrong[0]])} predictions for "
                                f"{len(points[wrong[0]])} points")
    n = len(samples)
    blank = np.array([""] * n)
    return {"pred": preds, "found": loaded.get("found", np.ones(n, bool)).tolist(),
            "text": loaded.get("text", blank).tolist(), "maps": loaded.get("maps", blank).tolist()}


# ------------------------------------------------------------------------------------------------ metrics
def _summary(result) -> dict[str, Any]:
    return {"sim": result.sim, "mae": result.mae, "auc": result.auc, "aiou": result.aiou,
            "samples": result.num_samples, "ranked_samples": result.num_ranked_samples}


def piad_metrics(preds: list[np.ndarray], gts: list[np.ndarray],
                 affordances: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Overall and per-affordance SIM/MAE/AUC/aIoU, and one row of scores per sample."""
    from ivlm_core.metrics.affordance import (
        average_iou,
        evaluate_affordance,
        has_both_classes,
        mean_absolute_error,
        roc_auc,
        similarity,
    )

    metrics: dict[str, Any] = {"overall": _summary(evaluate_affordance(preds, gts))}
    ranked = [i for i, g in enumerate(gts) if has_both_classes(g)]
    # The reference's evaluate.py (batch size 1) `continue`s on a single-class sample before any meter update,
    # so its printed SIM and MAE average the ranked samples only.
    metrics["reference_batch1"] = (_summary(evaluate_affordance([preds[i] for i in ranked], [gts[i] for i in ranked]))
                                   if ranked else None)  # fmt: skip
    metrics["per_affordance"] = {}
    for name in sorted(set(affordances)):
        idx = [i for i, a in enumerate(affordances) if a == name]
        metrics["per_affordance"][name] = _summary(evaluate_affordance([preds[i] for i in idx], [gts[i] for i in idx]))
    rows = []
    for pred, gt in zip(preds, gts):
        rows.append({"sim": similarity(pred, gt), "mae": mean_absolute_error(pred, gt), "auc": roc_auc(pred, gt),
                     "aiou": average_iou(pred, gt), "gt_points": int((gt >= 0.5).sum())})
    return metrics, rows


def _line(label: str, s: dict[str, Any]) -> str:
    return (f"{label}  SIM {s['sim']:.4f}  MAE {s['mae']:.4f}  AUC {s['auc']:.4f}  aIoU {s['aiou']:.4f}  "
            f"(samples {s['samples']}, AUC/aIoU over {s['ranked_samples']})")


def format_metrics(metrics: dict[str, Any]) -> str:
    o = metrics["overall"]
    lines = [
        f"PIAD object affordance: {o['samples']} samples of {metrics['dataset']} (split {metrics['split']}), "
        f"answers {metrics['inference_type']}, renders + point maps: {metrics['point_maps']}",
        _line("overall", o),
    ]
    if metrics["reference_batch1"] is not None:
        r = metrics["reference_batch1"]
        lines.append(f"reference  SIM {r['sim']:.4f}  MAE {r['mae']:.4f}  (as its evaluate.py prints them: "
                     "single-class GT samples left out of SIM/MAE too)")
    for name, s in metrics["per_affordance"].items():
        lines.append(_line(f"affordance {name:<10}", s))
    return "\n".join(lines)


def run_piad_eval(args: argparse.Namespace) -> int:
    from ivlm_core.datasets.piad import ground_truth, load_piad_split, read_point_file

    samples = load_piad_split(args.dataset, args.split)
    clouds = [read_point_file(s.point_path) for s in samples]
    points = [c[0] for c in clouds]
    gts = [ground_truth(c[1], s.affordance) for c, s in zip(clouds, samples)]
    if args.predictions is not None:
        predicted = load_predictions(args.predictions, samples, points)
    else:
        if args.point_maps == "shipped":  # checked before the (long) model run
            missing = next((m[0] for s in samples if (m := s.missing_shipped_files())), None)
            if missing is not None:
                raise missing_shipped_error(missing)
        predicted = predict_samples(args, samples, points)
    preds = [np.asarray(p, dtype=np.float32) for p in predicted["pred"]]
    affordances = [s.affordance for s in samples]
    metrics, rows = piad_metrics(preds, gts, affordances)
    sources = [str(m) for m in predicted["maps"]]
    counts = {k: sources.count(k) for k in sorted(set(sources)) if k}
    metrics.update({"dataset": str(args.dataset), "split": args.split, "points": sorted({len(p) for p in points}),
                    "inference_type": args.inference_type,
                    "point_maps": ", ".join(f"{k} {v}" for k, v in counts.items()) or "from --predictions"})
    if args.predictions is not None:
        metrics["inference_type"] = "from --predictions"

    offsets = np.cumsum([0] + [len(p) for p in preds])
    predictions = {"pred": np.concatenate(preds), "offsets": offsets, "sample": np.array(_keys(samples)),
                   "found": np.asarray(predicted["found"], bool), "text": np.asarray(predicted["text"]).astype(str),
                   "maps": np.asarray(sources).astype(str)}
    fields = ["image", "point_file", "object", "affordance", "sim", "mae", "auc", "aiou", "gt_points", "found",
              "maps", "answer"]
    table = [{"image": s.image_path.name, "point_file": s.point_path.name, "object": s.object_name,
              "affordance": s.affordance, **row, "found": bool(found), "maps": source, "answer": text}
             for s, row, found, source, text in zip(samples, rows, predicted["found"], sources, predicted["text"])]
    write_results(Path(args.out), predictions, fields, table, metrics, format_metrics(metrics))
    return 0
