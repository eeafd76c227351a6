"""`ivlm reconstruct`: the whole interaction task on one photo (no ROS needed).

    ivlm reconstruct --image tennis_racket__serve.png --checkpoint CKPT --body-model-dir BODY \\
                     --object-library objects.yaml --box 230,30,390,170 --out out/

It predicts human and object contacts, places the SMPL-X body in the camera frame (keypoint fit, or
`--osx-npz` from OSX), fits the object mesh to it by contact and writes, per image stem: `_interaction.glb`
(human + object in the camera frame, contact-coloured; `.ply` too when only one was placed), `_overlay.png`
(the fitted meshes over the photo), `_contacts.npz` (contacts, object pose, body parameters) and
`_fit_report.json` (statuses, fit report, timings). What cannot be placed is skipped with the reason in the
report and on stderr; the contacts are written regardless.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ivlm_core.cli.arguments import object_name_from_image
from ivlm_core.cli.outputs import FrameOutput, NamedMesh, close_sinks, open_sinks, write_frame
from ivlm_core.datasets.frames import read_image
from ivlm_core.errors import InvalidInputError, MissingAssetError

DEFAULT_FOV_DEG = 55.0  # horizontal field of view assumed when the intrinsics are unknown


# ------------------------------------------------------------------------------------------------ inputs
def _numbers(text: str, count: int, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"{what} must be {count} comma-separated numbers, got '{text}'")
    return values


def camera_matrix(image_hw: tuple[int, int], camera_k: str | None, fov_deg: float | None) -> np.ndarray:
    """K from 'fx,fy,cx,cy', else a pinhole with the given horizontal field of view centred on the image."""
    if camera_k is not None:
        fx, fy, cx, cy = _numbers(camera_k, 4, "--camera-k (fx,fy,cx,cy)")
        if fx <= 0 or fy <= 0:
            raise InvalidInputError(f"--camera-k focal lengths must be positive, got fx={fx}, fy={fy}")
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    fov = DEFAULT_FOV_DEG if fov_deg is None else float(fov_deg)
    if not 1.0 <= fov <= 179.0:
        raise InvalidInputError(f"--fov-deg must be in [1, 179] degrees, got {fov}")
    h, w = image_hw
    focal = 0.5 * w / math.tan(math.radians(fov) / 2)
    return np.array([[focal, 0.0, w / 2], [0.0, focal, h / 2], [0.0, 0.0, 1.0]])


def read_mask(path: Path, image_hw: tuple[int, int]) -> np.ndarray:
    """A binary object mask PNG of the photo's size (non-zero / > 127 grey = object)."""
    from PIL import Image

    if not path.is_file():
        raise MissingAssetError("object mask", path, "Check the --mask path (a PNG the size of the photo).")
    mask = np.asarray(Image.open(path).convert("L")) > 127
    if mask.shape != tuple(image_hw):
        raise InvalidInputError(
            f"--mask is {mask.shape[1]}x{mask.shape[0]} but the photo is {image_hw[1]}x{image_hw[0]}")
    if not mask.any():
        raise InvalidInputError(f"--mask '{path}' is empty (no pixel above 127)")
    return mask


# ------------------------------------------------------------------------------------------------ outputs
def placed_meshes(result: Any) -> list[tuple[str, Any]]:
    """The placed human and object as contact-coloured meshes in the camera frame (only what was placed)."""
    from ivlm_core.fitting.export import HUMAN_RGB, OBJECT_RGB, ColouredMesh, contact_colours

    meshes = []
    body, placement = result.body_placement, result.object_placement
    if body is not None and body.placed:
        contact = result.human.vertex_contact if result.human is not None else None
        if contact is not None and len(contact) != len(body.vertices):
            contact = None  # contacts on the SMPL-H canonical body cannot colour the SMPL-X mesh
        meshes.append(("human", ColouredMesh(body.vertices.astype(np.float64), np.asarray(body.faces, np.int64),
                                             contact_colours(contact, len(body.vertices), HUMAN_RGB))))
    if placement is not None and placement.placed and result.object is not None:
        obj = result.object
        meshes.append(("object", ColouredMesh(placement.vertices.astype(np.float64),
                                              np.asarray(obj.faces, np.int64),
                                              contact_colours(obj.vertex_contact, len(placement.vertices),
                                                              OBJECT_RGB))))
    return meshes


def contact_arrays(result: Any, camera_k: np.ndarray) -> dict[str, np.ndarray]:
    """Everything numeric: contacts (with the reference's key names too), object pose, body mesh + params."""
    from ivlm_core.fitting.rotation import matrix_to_quaternion_xyzw

    arrays: dict[str, np.ndarray] = {"camera_k": np.asarray(camera_k, dtype=np.float64)}
    human, obj = result.human, result.object
    if human is not None:
        arrays["human_body_model"] = np.array(human.body_model)
        if human.vertex_contact is not None:
            arrays["human_contact"] = human.vertex_contact.astype(np.float32)
            key = "pred_contact_3d_smplx" if human.body_model == "smplx" else "pred_contact_3d_smplh"
            arrays[key] = arrays["human_contact"]
    if obj is not None:
        arrays["object_vertices"] = obj.vertices.astype(np.float32)
        arrays["object_faces"] = obj.faces.astype(np.int64)
        if obj.vertex_contact is not None:
            arrays["object_contact"] = obj.vertex_contact.astype(np.float32)
            arrays["pred_contact_3d"] = arrays["object_contact"]
    placement = result.object_placement
    if placement is not None and placement.placed:
        arrays["object_rotation"] = np.asarray(placement.rotation, dtype=np.float64)
        arrays["object_translation"] = np.asarray(placement.translation, dtype=np.float64)
        arrays["object_quaternion_xyzw"] = matrix_to_quaternion_xyzw(placement.rotation)
        arrays["object_scale"] = np.array(placement.scale, dtype=np.float64)
        arrays["object_vertices_camera"] = placement.vertices.astype(np.float32)
    body = result.body_placement
    if body is not None and body.placed:
        arrays["body_vertices"] = body.vertices.astype(np.float32)
        arrays["body_faces"] = np.asarray(body.faces, dtype=np.int64)
        for name, value in body.params.items():
            arrays[f"body_{name}"] = np.asarray(value, dtype=np.float32)
    return arrays


def fit_report(result: Any, args: argparse.Namespace, camera_k: np.ndarray, k_source: str,
               load_ms: float, pipeline: Any) -> dict[str, Any]:
    """JSON-ready summary: what was estimated, what was placed (or why not), the fit numbers and timings."""
    human, obj, body, placement = result.human, result.object, result.body_placement, result.object_placement
    report: dict[str, Any] = {
        "image": str(args.image),
        "object_query": result.object_query,
        "model_id": pipeline.model_id,
        "device": pipeline.device,
        "dtype": pipeline.dtype,
        "camera_k": np.asarray(camera_k).tolist(),
        "camera_k_source": k_source,
        "object_mask_source": "mask" if args.mask else ("box" if args.box else "none"),
        "body_source": "osx_npz" if args.osx_npz else "keypoint_fit",
    }
    if human is not None:
        report["human"] = {
            "contact_found": human.contact_found, "generated_text": human.generated_text,
            "body_parts": human.body_parts, "body_model": human.body_model,
            "contact_vertices": None if human.vertex_contact is None
            else int((human.vertex_contact >= pipeline.cfg.human_threshold).sum()),
        }
    if obj is not None:
        report["object"] = {
            "label": obj.label, "mesh_path": obj.mesh_path, "contact_found": obj.contact_found,
            "affordance": obj.affordance, "generated_text": obj.generated_text,
            "contact_vertices": None if obj.vertex_contact is None
            else int((obj.vertex_contact >= pipeline.cfg.object_threshold).sum()),
        }
    report["body_placement"] = {"placed": bool(body.placed), "status": body.status} if body is not None else {
        "placed": False, "status": "body not placed: no body placer"}
    if placement is not None:
        entry: dict[str, Any] = {"placed": bool(placement.placed), "status": placement.status}
        if placement.placed:
            from ivlm_core.fitting.rotation import matrix_to_quaternion_xyzw

            q = matrix_to_quaternion_xyzw(placement.rotation)
            t = np.asarray(placement.translation, dtype=np.float64)
            entry["pose"] = {"position": dict(zip("xyz", t.tolist())),
                             "orientation": dict(zip("xyzw", q.tolist()))}
            entry["scale"] = float(placement.scale)
            entry["report"] = {k: float(v) for k, v in placement.report.items()}
        report["object_placement"] = entry
    report["timings_ms"] = {"load": load_ms, **{k: float(v) for k, v in result.timings_ms.items()}}
    return report


# ------------------------------------------------------------------------------------------------ reconstruct
def reconstruct(args: argparse.Namespace) -> dict[str, Path]:
    """Run the interaction task on one photo and hand its products to the sinks; returns {product: path}."""
    from ivlm_core.pipeline import InteractionPipeline, PipelineConfig

    image_path = Path(args.image)
    image = read_image(image_path)
    label = args.object or object_name_from_image(image_path)
    k_source = "--camera-k" if args.camera_k else f"fov {args.fov_deg or DEFAULT_FOV_DEG:g} deg (horizontal)"
    camera_k = camera_matrix(image.shape[:2], args.camera_k, args.fov_deg)
    mask = read_mask(Path(args.mask), image.shape[:2]) if args.mask else None
    box = tuple(_numbers(args.box, 4, "--box (x0,y0,x1,y1)")) if args.box else None
    if box is not None and not (box[2] > box[0] and box[3] > box[1]):
        raise InvalidInputError(f"--box must be x0,y0,x1,y1 with x1 > x0 and y1 > y0, got {args.box}")
    if mask is None and box is None:
        print("note: no --box or --mask: the object is not placed, only its contacts are written", file=sys.stderr)
    if args.osx_npz is not None and not Path(args.osx_npz).is_file():
        raise MissingAssetError("OSX body file", args.osx_npz, "Run OSX on the photo and pass its osx_human2.npz.")

    def text(path: Path | str | None) -> str | None:
        return None if path is None else str(path)

    cfg = PipelineConfig(
        checkpoint_dir=str(args.checkpoint), clip_dir=text(args.clip_dir), body_model_dir=text(args.body_model_dir),
        smpl_to_smplx=args.smpl_to_smplx, reference_data_dir=text(args.reference_data_dir), device=args.device,
        dtype=args.dtype, quantization=args.quantization, draft_tokens=args.draft_tokens,
        decoder_compile=args.decoder_compile, decoder_gemv=args.decoder_gemv, task="interaction",
        object_library=args.object_library, fit_human=True, fit_object=True, fit_config=args.fit_config,
        max_new_tokens=args.max_new_tokens, question_template=args.question_type,
        object_cam_distance=args.object_cam_distance)
    t0 = time.perf_counter()
    pipeline = InteractionPipeline.load(cfg)
    load_ms = (time.perf_counter() - t0) * 1000.0
    result = pipeline.estimate(image, label, camera_k=camera_k, object_mask=mask, object_box=box,
                               external_body=args.osx_npz)

    t0 = time.perf_counter()
    frame = FrameOutput(stem=image_path.stem, source_image=image, camera_k=camera_k, object_name=label)
    meshes = placed_meshes(result)
    contact = {"human": result.human.vertex_contact if result.human is not None else None,
               "object": result.object.vertex_contact if result.object is not None else None}
    for placement in (result.body_placement, result.object_placement):
        if placement is not None and not placement.placed:
            print(f"note: {placement.status}", file=sys.stderr)
    if meshes:
        from ivlm_core.fitting.export import render_overlay

        frame.meshes["interaction"] = [NamedMesh(name, m.vertices, m.faces, m.colours, contact.get(name))
                                       for name, m in meshes]
        frame.images["overlay"] = render_overlay(image, [mesh for _, mesh in meshes], camera_k)
    else:
        print("note: nothing was placed in the camera frame, so no .glb or overlay was written", file=sys.stderr)
    frame.arrays["contacts"] = contact_arrays(result, camera_k)
    sinks = open_sinks(args)
    written = write_frame(sinks, frame)
    report = fit_report(result, args, camera_k, k_source, load_ms, pipeline)
    report["timings_ms"]["export"] = (time.perf_counter() - t0) * 1000.0
    report["outputs"] = {kind: str(path) for kind, path in written.items()}
    written.update(write_frame(sinks, FrameOutput(stem=image_path.stem, documents={"fit_report": report})))
    written.update(close_sinks(sinks))
    return written


def run_reconstruct(args: argparse.Namespace) -> int:
    for kind, path in reconstruct(args).items():
        print(f"{kind}: {path}")
    return 0


def add_reconstruct_arguments(rec: argparse.ArgumentParser) -> None:
    rec.add_argument("--image", required=True, type=Path,
                     help="RGB photo; named <object>__<anything>.png unless --object")
    rec.add_argument("--object", help="object label in the library (default: parsed from the image file name)")
    rec.add_argument("--smpl-to-smplx", help="SMPL(-H) -> SMPL-X contact transfer (default: in --body-model-dir)")
    rec.add_argument("--object-library", help="YAML: object label -> mesh file + metric scale")
    rec.add_argument("--fit-config", help="object fit YAML (default: config/fitting.yaml)")
    rec.add_argument("--question-type", default="auto", choices=("auto", "parts", "simple"),
                     help="human question type (auto: the checkpoint's hC_question_type)")
    camera = rec.add_mutually_exclusive_group()
    camera.add_argument("--camera-k", help="intrinsics fx,fy,cx,cy in pixels")
    camera.add_argument("--fov-deg", type=float,
                        help=f"horizontal field of view when K is unknown (default {DEFAULT_FOV_DEG:g})")
    target = rec.add_mutually_exclusive_group()
    target.add_argument("--mask", help="object mask PNG (photo size, object > 127)")
    target.add_argument("--box", help="object box x0,y0,x1,y1 in pixels; SAM segments the object in it")
    rec.add_argument("--osx-npz", help="body from OSX (osx_human2.npz) instead of the keypoint fit")
