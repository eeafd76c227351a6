"""`ivlm eval`: InteractVLM's human-contact evaluation (spec section 6) on a DAMON-format split you supply; with
`--format piad` its object-affordance evaluation on a PIAD split (`ivlm_core.cli.evaluate_piad`).

It runs the model on every object-wise sample (or re-scores a `predictions.npz` of an earlier run) and prints
the reference's metrics, with ivlm's fixes of its bugs (see `ivlm_core.metrics`):
* semantic (object-wise): precision, recall, F1 per sample at prediction >= threshold vs GT > 0, averaged;
* binary (per image): the samples of an image OR-ed; F1 averaged over images, precision/recall micro-averaged;
* geodesic error: mean over samples of the mean distance (along the SMPL-H mesh, metres) from each predicted
  contact vertex to the nearest true one (pred->gt), and the reverse (gt->pred: missed contact).
Files in --out: `metrics.json`, `samples.csv` (per-sample scores) and `predictions.npz` (re-score with
--predictions).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ivlm_core.cli.eval_files import read_predictions, write_results
from ivlm_core.errors import InvalidInputError

FORMATS = ("damon", "piad")
INFERENCE_TYPES = ("generate", "forward")
POINT_MAP_SOURCES = ("auto", "shipped", "ivlm")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, type=Path,
                        help="damon: split folder with imgname.npy, contact_label_objectwise.npy and images/; "
                             "piad: split folder with Img_<split>.txt and Point_<split>.txt (e.g. "
                             "data/piad_ocontact_seen)")
    parser.add_argument("--format", choices=FORMATS, default="damon",
                        help="dataset layout: damon (human contact on SMPL-H) or piad (object affordance on point "
                             "clouds)")
    parser.add_argument("--predictions", type=Path, default=None,
                        help="re-score this predictions.npz of an earlier `ivlm eval` instead of running the model")
    piad = parser.add_argument_group("PIAD (--format piad)")
    piad.add_argument("--split", default="Test", help="reads Img_<split>.txt and Point_<split>.txt")
    piad.add_argument("--inference-type", choices=INFERENCE_TYPES, default="generate",
                      help="generate: the model answers; forward: the reference's teacher-forced answer with the GT "
                           "affordance (its PIAD protocol)")
    piad.add_argument("--point-maps", choices=POINT_MAP_SOURCES, default="auto",
                      help="SAM renders + pixel->point maps: shipped (InteractVLM's sam_*.png / p2pmap_*.npz next to "
                           "the photos), ivlm (splat the point cloud), auto (shipped where found, else ivlm)")
    piad.add_argument("--render-size", type=int, default=1024,
                      help="side in pixels of ivlm's own point-cloud renders")
    parser.add_argument("--geodesic-matrix", type=Path, default=None,
                        help="precomputed (N, N) geodesic distances .npy (e.g. the reference's "
                             "smpl_neutral_geodesic_dist.npy); default: shortest paths along the SMPL-H mesh "
                             "of --body-model-dir")
    parser.add_argument("--threshold", type=float, default=0.5, help="a vertex is predicted in contact at >= this")
    parser.add_argument("--template", default=None,
                        help="question template: damon parts|simple, piad afford|contact (default: the checkpoint's)")
    parser.set_defaults(task="human", mesh=None, no_generate=False, naive=False, object_dist=1.5, sam_config=None)


# ------------------------------------------------------------------------------------------------ predictions
def predict_samples(args: argparse.Namespace, samples: list, num_vertices: int) -> dict[str, np.ndarray]:
    """Run the human-contact model on every sample (progress bar); NoContactFound counts as no contact."""
    from ivlm_core.cli.predict import ContactPredictor
    from ivlm_core.datasets.frames import read_image
    from ivlm_core.progress import ProgressReporter

    if args.checkpoint is None:
        raise InvalidInputError("ivlm eval needs --checkpoint (or --predictions to re-score an earlier run)")
    predictor = ContactPredictor(args)
    preds, found, texts = [], [], []
    image_path, image = None, None
    with ProgressReporter("eval (DAMON)", len(samples), unit="sample") as progress:
        for sample in samples:
            if sample.image_path != image_path:
                image_path, image = sample.image_path, read_image(sample.image_path)
            result = predictor.model.predict_human_contact(image, sample.query, template=args.template,
                                                           **predictor.common)
            texts.append(result.language.text)
            found.append(bool(result.found))
            preds.append(result.contacts_smplh if result.found else None)
            progress.advance(1)
    wrong = {len(p) for p in preds if p is not None and len(p) != num_vertices}
    if wrong:
        raise InvalidInputError(f"the model predicts {sorted(wrong)} vertices but the geodesic mesh has {num_vertices}")
    matrix = np.stack([p if p is not None else np.zeros(num_vertices, np.float32) for p in preds]).astype(np.float32)
    return {"pred": matrix, "found": np.array(found), "text": np.array(texts)}


def load_predictions(path: Path, samples: list) -> dict[str, np.ndarray]:
    loaded = read_predictions(path, {"pred", "image_id", "object"}, "ivlm eval")
    keys = [(s.image_id, s.object_name) for s in samples]
    stored = list(zip(loaded["image_id"].tolist(), loaded["object"].tolist()))
    if stored != keys:
        raise InvalidInputError(f"'{path}' holds predictions for other samples than the dataset's {len(keys)}")
    loaded.setdefault("found", np.ones(len(samples), bool))
    loaded.setdefault("text", np.array([""] * len(samples)))
    return loaded


# ------------------------------------------------------------------------------------------------ metrics
def _geodesic(args: argparse.Namespace):
    from ivlm_core.metrics.geodesic import GeodesicDistance

    if args.geodesic_matrix is not None:
        geodesic = GeodesicDistance.from_matrix(args.geodesic_matrix)
    elif args.body_model_dir is not None:
        from ivlm_core.body.models import load_body_model, posed_mesh

        vertices, faces = posed_mesh(load_body_model(args.body_model_dir, "smplh"))
        geodesic = GeodesicDistance.from_mesh(vertices[0].detach().cpu().numpy(), faces)
    else:
        raise InvalidInputError("the geodesic error needs --body-model-dir (SMPL-H mesh) or --geodesic-matrix")
    return geodesic


def damon_metrics(preds: np.ndarray, gts: np.ndarray, image_ids: list[str], objects: list[str], geodesic,
                  threshold: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The summary metrics and one row of scores per sample."""
    from ivlm_core.metrics.contact import damon_binary_contact, damon_semantic_contact, per_sample_scores
    from ivlm_core.metrics.geodesic import geodesic_error

    semantic = damon_semantic_contact(preds, gts, objects, threshold=threshold)
    binary = damon_binary_contact(preds, gts, image_ids, threshold=threshold)
    scores = per_sample_scores(preds, gts, threshold)
    rows, forward, backward = [], [], []
    for i, (pred, gt) in enumerate(zip(preds, gts)):
        p2g = geodesic_error(pred, gt, geodesic, threshold, "pred_to_gt")
        g2p = geodesic_error(pred, gt, geodesic, threshold, "gt_to_pred")
        forward.append(p2g)
        backward.append(g2p)
        rows.append({"image_id": image_ids[i], "object": objects[i], "precision": scores[i, 0],
                     "recall": scores[i, 1], "f1": scores[i, 2], "geodesic_pred_to_gt": p2g,
                     "geodesic_gt_to_pred": g2p, "gt_vertices": int((gt > 0).sum()),
                     "pred_vertices": int((pred >= threshold).sum())})

    def mean(values: list[float]) -> float:
        valid = [v for v in values if not np.isnan(v)]
        return float(np.mean(valid)) if valid else float("nan")

    weighted = semantic.weighted.scores
    metrics = {
        "samples": len(preds), "images": binary.num_images, "vertices": int(preds.shape[1]),
        "threshold": threshold,
        "semantic": {"f1": weighted.f1, "precision": weighted.precision, "recall": weighted.recall},
        "binary": {"f1": binary.f1, "precision": binary.precision, "recall": binary.recall},
        "geodesic": {"pred_to_gt": mean(forward), "gt_to_pred": mean(backward)},
        "per_object": {name: {"f1": g.scores.f1, "precision": g.scores.precision, "recall": g.scores.recall,
                              "count": g.count} for name, g in semantic.per_object.items()},
    }
    return metrics, rows


def format_metrics(metrics: dict[str, Any], dataset: Path) -> str:
    s, b, g = metrics["semantic"], metrics["binary"], metrics["geodesic"]
    return "\n".join([
        f"DAMON human contact: {metrics['samples']} object-wise samples on {metrics['images']} images of "
        f"{dataset}, threshold {metrics['threshold']:g}, {metrics['vertices']} vertices",
        f"semantic  F1 {s['f1']:.4f}  precision {s['precision']:.4f}  recall {s['recall']:.4f}  (mean per sample)",
        f"binary    F1 {b['f1']:.4f}  precision {b['precision']:.4f}  recall {b['recall']:.4f}  (per image; P/R "
        "micro-averaged)",
        f"geodesic  error {g['pred_to_gt']:.4f}  (pred->gt, mesh units)  missed {g['gt_to_pred']:.4f}  (gt->pred)",
    ])


def run_eval(args: argparse.Namespace) -> int:
    if args.format == "piad":
        from ivlm_core.cli.evaluate_piad import run_piad_eval

        if args.render_size <= 0:
            raise InvalidInputError(f"--render-size must be positive, got {args.render_size}")
        return run_piad_eval(args)
    if args.inference_type != "generate":
        raise InvalidInputError("--inference-type forward needs the GT answer, which only --format piad has")
    from ivlm_core.datasets.damon import contact_vector, load_damon_split

    samples = load_damon_split(args.dataset)
    geodesic = _geodesic(args)  # checked before the (long) model run
    num_vertices = geodesic.num_vertices
    if args.predictions is not None:
        predicted = load_predictions(args.predictions, samples)
    else:
        predicted = predict_samples(args, samples, num_vertices)
    preds = np.asarray(predicted["pred"], dtype=np.float32)
    if preds.shape != (len(samples), num_vertices):
        raise InvalidInputError(f"expected ({len(samples)}, {num_vertices}) predictions, got {preds.shape}")
    gts = np.stack([contact_vector(s, num_vertices) for s in samples])
    image_ids = [s.image_id for s in samples]
    objects = [s.object_name for s in samples]
    metrics, rows = damon_metrics(preds, gts, image_ids, objects, geodesic, args.threshold)
    metrics["dataset"] = str(args.dataset)

    predictions = {"pred": preds, "image_id": np.array(image_ids), "object": np.array(objects),
                   "found": np.asarray(predicted["found"], bool), "text": np.asarray(predicted["text"]).astype(str)}
    write_results(Path(args.out), predictions, list(rows[0]), rows, metrics, format_metrics(metrics, args.dataset))
    return 0
