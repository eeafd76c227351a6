"""Bodies supplied from outside (a better regressor): the reference's OSX `.npz`, or SMPL-X parameters.

Both end up as a `BodyFitResult` in the OpenCV camera frame of the image (x right, y down, z forward), the
same type the keypoint fit returns, so the rest of the pipeline does not care where the body came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.fitting.body_fit import BodyFitResult, CameraBodyPlacer, solve_translation
from ivlm_core.fitting.body_layer import BodyLayer
from ivlm_core.geometry.raster import checked_vertices

SMPLX_NUM_VERTICES = 10475
# OSX crops the person to a 256x192 (h x w) input and predicts with a virtual focal length of 5000 px.
OSX_FOCAL = 5000.0
OSX_INPUT_HW = (256.0, 192.0)

# Flat-array layout of SMPL-X parameters (the order of ivlm_msgs/SmplxParams), 182 values with 10 betas and
# 10 expression coefficients. Hand poses are full 45-D axis-angle relative to a flat hand.
SMPLX_PARAM_LAYOUT: tuple[tuple[str, int], ...] = (
    ("betas", 10), ("global_orient", 3), ("body_pose", 63), ("left_hand_pose", 45), ("right_hand_pose", 45),
    ("jaw_pose", 3), ("expression", 10), ("transl", 3),
)  # fmt: skip
_FIXED_SIZES = {"global_orient": 3, "body_pose": 63, "jaw_pose": 3, "leye_pose": 3, "reye_pose": 3, "transl": 3}
_OPTIONAL_EMPTY = {"left_hand_pose": 45, "right_hand_pose": 45}  # empty = flat hand
_IGNORED_KEYS = {"gender", "header", "frame_id"}


@dataclass
class OsxBody:
    """Contents of an OSX result file: the SMPL-X mesh in OSX's virtual camera frame and the crop box."""

    vertices: np.ndarray  # (N, 3) float32, OpenCV axes, metres
    faces: np.ndarray  # (F, 3) int64
    bbox_xywh: np.ndarray  # (4,) float32, the body crop in image pixels

    @property
    def camera_matrix(self) -> np.ndarray:
        return osx_camera_matrix(self.bbox_xywh)


def osx_camera_matrix(bbox_xywh: np.ndarray) -> np.ndarray:
    """OSX's virtual intrinsics for a crop box: f = (5000/192 w, 5000/256 h), c = crop centre (spec section 5)."""
    x, y, w, h = (float(v) for v in np.asarray(bbox_xywh, dtype=np.float64).reshape(4))
    if w <= 0 or h <= 0:
        raise InvalidInputError(f"OSX bbox must have positive width and height, got [x, y, w, h] = {bbox_xywh}")
    in_h, in_w = OSX_INPUT_HW
    return np.array([[OSX_FOCAL / in_w * w, 0.0, x + w / 2], [0.0, OSX_FOCAL / in_h * h, y + h / 2], [0.0, 0.0, 1.0]])


def load_osx_npz(source: str | Path | Mapping[str, Any], expected_vertices: int | None = SMPLX_NUM_VERTICES) -> OsxBody:
    """Read `smpl_vertices[0]`, `smpl_faces`, `bbox_2[0]` (the reference's `osx_human2.npz` layout)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise MissingAssetError("OSX body file", path, "run OSX on the image and pass its osx_human2.npz")
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        where = str(path)
    else:
        arrays, where = dict(source), "OSX data"
    missing = [key for key in ("smpl_vertices", "smpl_faces", "bbox_2") if key not in arrays]
    if missing:
        raise InvalidInputError(f"{where} lacks {missing}; expected keys smpl_vertices, smpl_faces, bbox_2")
    vertices = np.asarray(arrays["smpl_vertices"])
    vertices = vertices[0] if vertices.ndim == 3 else vertices
    vertices = checked_vertices(vertices, f"{where}: smpl_vertices", "re-run OSX on the image").astype(np.float32)
    if expected_vertices is not None and len(vertices) != expected_vertices:
        raise InvalidInputError(
            f"{where}: smpl_vertices has {len(vertices)} vertices, expected the SMPL-X mesh ({expected_vertices}); "
            "OSX must be run in its SMPL-X output mode"
        )
    faces = np.asarray(arrays["smpl_faces"]).astype(np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise InvalidInputError(f"{where}: smpl_faces index outside the {len(vertices)} vertices")
    bbox = np.asarray(arrays["bbox_2"], dtype=np.float32).reshape(-1, 4)[0]
    return OsxBody(vertices=vertices, faces=faces, bbox_xywh=bbox)


def place_osx_body(osx: OsxBody, camera_k: np.ndarray | None = None) -> BodyFitResult:
    """Express the OSX mesh in the real camera: translate it (rigidly, metric size kept) so that it projects
    through `camera_k` where it projected through OSX's virtual camera. Without K, the OSX frame is kept."""
    vertices = osx.vertices.astype(np.float64)
    status = "body from an external OSX mesh"
    if camera_k is not None:
        k = np.asarray(camera_k, dtype=np.float64)
        k_osx = osx.camera_matrix
        pixels = vertices[:, :2] / vertices[:, 2:3] * np.diag(k_osx)[:2] + k_osx[:2, 2]
        shift = solve_translation(vertices, pixels, np.ones(len(vertices), dtype=np.float32), k)
        vertices = vertices + shift
        status += " (re-projected into the camera intrinsics)"
    return BodyFitResult(
        placed=True,
        status=status,
        params={},
        vertices=vertices.astype(np.float32),
        faces=osx.faces,
        camera_k=None if camera_k is None else np.asarray(camera_k, dtype=np.float64),
    )


def parse_smplx_params(
    data: Mapping[str, Any] | np.ndarray, num_betas: int = 10, num_expression: int = 10
) -> dict[str, np.ndarray]:
    """Validate SMPL-X parameters given as a dict (message fields) or a flat array (`SMPLX_PARAM_LAYOUT`).

    Returns float32 vectors; missing hands/jaw/expression are zero (flat hands, neutral face).
    """
    if isinstance(data, Mapping):
        params: dict[str, np.ndarray] = {}
        unknown = set(data) - {n for n, _ in SMPLX_PARAM_LAYOUT} - set(_FIXED_SIZES) - _IGNORED_KEYS
        if unknown:
            raise InvalidInputError(f"unknown SMPL-X parameters {sorted(unknown)}")
        for name, value in data.items():
            if name in _IGNORED_KEYS:
                continue
            array = np.asarray(value, dtype=np.float32).reshape(-1)
            if array.size == 0 and name in {**_OPTIONAL_EMPTY, "betas": 0, "expression": 0}:
                continue  # empty = default (flat hand, mean shape, neutral face), filled in below
            expected = _FIXED_SIZES.get(name) or _OPTIONAL_EMPTY.get(name)
            if name in ("betas", "expression"):  # never cut or padded: a wrong size means a different model
                expected = num_betas if name == "betas" else num_expression
                if array.size != expected:
                    raise InvalidInputError(
                        f"SMPL-X {name} must have {expected} values (the loaded body model's size) or be empty "
                        f"(= zeros), got {array.size}")
            if expected is not None and array.size != expected:
                raise InvalidInputError(f"SMPL-X {name} must have {expected} values, got {array.size}")
            params[name] = array
    else:
        array = np.asarray(data, dtype=np.float32).reshape(-1)
        sizes = dict(SMPLX_PARAM_LAYOUT, betas=num_betas, expression=num_expression)
        total = sum(sizes.values())
        if array.size != total:
            raise InvalidInputError(
                f"flat SMPL-X parameters must have {total} values ({', '.join(f'{n} {s}' for n, s in sizes.items())}),"
                f" got {array.size}"
            )
        params, offset = {}, 0
        for name, _ in SMPLX_PARAM_LAYOUT:
            params[name] = array[offset : offset + sizes[name]].copy()
            offset += sizes[name]
    for name in ("global_orient", "body_pose", "transl"):
        if name not in params:
            raise InvalidInputError(f"SMPL-X parameters need '{name}'")
    for name, size in (*_OPTIONAL_EMPTY.items(), ("jaw_pose", 3), ("betas", num_betas), ("expression", num_expression)):
        params.setdefault(name, np.zeros(size, dtype=np.float32))
    if not all(np.all(np.isfinite(v)) for v in params.values()):
        raise InvalidInputError("SMPL-X parameters contain NaN or infinite values")
    return params


def body_from_smplx_params(
    params: Mapping[str, Any] | np.ndarray, layer: BodyLayer, camera_k: np.ndarray | None = None
) -> BodyFitResult:
    """Pose the user's SMPL-X model with externally estimated parameters already in the camera frame."""
    parsed = parse_smplx_params(params, layer.num_betas, layer.num_expression or 10)
    with torch.no_grad():
        output = layer({name: torch.from_numpy(value)[None] for name, value in parsed.items()})
    return BodyFitResult(
        placed=True,
        status="body from external SMPL-X parameters",
        params=parsed,
        vertices=output.vertices[0].numpy().astype(np.float32),
        faces=layer.faces,
        joints=output.joints[0].numpy().astype(np.float32),
        camera_k=None if camera_k is None else np.asarray(camera_k, dtype=np.float64),
    )


def place_from_params(
    placer: CameraBodyPlacer, params: Mapping[str, Any] | np.ndarray, camera_k: np.ndarray | None = None
) -> BodyFitResult:
    """Externally estimated SMPL-X parameters (camera frame) posed with the placer's SMPL-X model, instead of
    its keypoint fit; not placed, with the placer's reason, when it has no SMPL-X model."""
    if placer.layer is None:
        return BodyFitResult(False, placer.unavailable_reason)
    return body_from_smplx_params(params, placer.layer, camera_k)
