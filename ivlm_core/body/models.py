"""SMPL-X and SMPL-H body models, loaded with the real `smplx` package from user-supplied files.

The body models are licensed, so users download them themselves and point ivlm at one folder:

BODY_MODEL_LAYOUT::

    <body_model_dir>/
        smplx/SMPLX_NEUTRAL.npz    (or .pkl; also SMPLX_MALE / SMPLX_FEMALE)   https://smpl-x.is.tue.mpg.de
        smplh/SMPLH_NEUTRAL.pkl    (or .npz; also SMPLH_MALE / SMPLH_FEMALE)   https://mano.is.tue.mpg.de
        smpl_to_smplx.pkl          SMPL(-H) -> SMPL-X contact mapping, from the InteractVLM data.zip
                                   (data/smpl_to_smplx.pkl); see ivlm_core.body.transfer

SMPL-X (10475 vertices) is the body the fitting and visualisation use; SMPL-H (6890 vertices, SMPL topology)
is the body of the canonical renders that the contact predictor lifts to 3D. InteractVLM renders
SMPLH_NEUTRAL.pkl.

Why a custom pkl loader: the official .pkl files are Python-2 pickles whose arrays may be `chumpy` objects,
and chumpy does not import on current numpy/Python. `load_model_arrays` unpickles them with an allow-list that
turns chumpy arrays into numpy arrays, without executing anything else. `convert_body_model_to_npz` does the
same once and writes a .npz that loads faster.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import textwrap
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import smplx
import torch
from smplx.utils import Struct
from smplx.vertex_ids import vertex_ids as OFFICIAL_KEYPOINT_VERTEX_IDS
from smplx.vertex_joint_selector import VertexJointSelector

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.safe_pickle import ChumpyStandIn, load_pickle

LOG = logging.getLogger(__name__)

BODY_MODEL_LAYOUT = textwrap.dedent(__doc__.split("BODY_MODEL_LAYOUT::", 1)[1].split("\n\n", 2)[1])
BODY_MODEL_SOURCES = {
    "smplx": "Register and download SMPL-X (npz or pkl) from https://smpl-x.is.tue.mpg.de",
    "smplh": "Register and download the SMPL+H model from https://mano.is.tue.mpg.de",
}
_PREFIX = {"smplx": "SMPLX", "smplh": "SMPLH"}
_EXTENSIONS = {"smplx": ("npz", "pkl"), "smplh": ("pkl", "npz")}  # first = preferred
GENDERS = ("neutral", "male", "female")
# Entries smplx reads from a model file; a pickled (object) entry among these is refused, others are skipped.
_NEEDED_KEYS = frozenset({
    "v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "hands_componentsl",
    "hands_componentsr", "hands_meanl", "hands_meanr", "lmk_faces_idx", "lmk_bary_coords",
    "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords",
})
# Vitruvian pose of the canonical renders: hips spread +-30 deg about z (body_pose index 0 = left hip).
VITRUVIAN_HIP_ANGLE_DEG = 30.0


def _check_kind(kind: str, gender: str) -> None:
    if kind not in _PREFIX:
        raise InvalidInputError(f"body model kind must be one of {sorted(_PREFIX)}, got {kind!r}")
    if gender not in GENDERS:
        raise InvalidInputError(f"gender must be one of {GENDERS}, got {gender!r}")


def find_body_model_file(model_dir: str | Path, kind: str, gender: str = "neutral") -> Path:
    """Path of `<model_dir>/<kind>/<PREFIX>_<GENDER>.<ext>` (npz or pkl); MissingAssetError if absent.

    `model_dir` may also be the `<kind>` folder itself or the model file.
    """
    _check_kind(kind, gender)
    model_dir = Path(model_dir).expanduser()
    if model_dir.is_file():
        return model_dir
    stem = f"{_PREFIX[kind]}_{gender.upper()}"
    for folder in (model_dir / kind, model_dir):
        for ext in _EXTENSIONS[kind]:
            candidate = folder / f"{stem}.{ext}"
            if candidate.is_file():
                return candidate
    expected = model_dir / kind / f"{stem}.{_EXTENSIONS[kind][0]}"
    raise MissingAssetError(
        f"{kind.upper()} body model ({gender})", expected,
        f"{BODY_MODEL_SOURCES[kind]} and place it as {expected} (.{_EXTENSIONS[kind][1]} also works). "
        f"Expected layout:\n{BODY_MODEL_LAYOUT}")


def _to_array(value: Any, key: str) -> Any:
    if isinstance(value, ChumpyStandIn):
        if "x" not in value.state:
            raise InvalidInputError(
                f"body model entry '{key}' is a derived chumpy expression ({value.chumpy_class}), not a "
                "plain array; convert the file with chumpy installed (python2) or use the official .npz "
                "release")
        return _to_array(value.state["x"], key)
    if sp.issparse(value):
        return np.asarray(value.toarray())
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        return np.array(value)
    return value


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The numeric entries of a body model .npz, read with ``allow_pickle=False``.

    Pickled (object) entries are never unpickled: the ones smplx does not use (e.g. ``joint2num`` in some
    releases) are skipped; a needed one is refused, naming the file and the entry.
    """
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                try:
                    arrays[key] = data[key]
                except ValueError as err:  # "Object arrays cannot be loaded when allow_pickle=False"
                    if key in _NEEDED_KEYS:
                        raise InvalidInputError(
                            f"body model {path}: entry '{key}' is a pickled Python object, not a numeric array; "
                            "refusing to unpickle it (it could run code). Use the official release file."
                        ) from err
                    LOG.debug("skipping the pickled entry '%s' of %s", key, path)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise InvalidInputError(f"cannot read body model {path}: {err}") from err
    return arrays


def load_model_arrays(path: str | Path) -> dict[str, Any]:
    """All entries of a body model file as numpy arrays (pkl via the allow-listed unpickler, npz without pickle)."""
    path = Path(path)
    if path.suffix == ".npz":
        return _npz_arrays(path)
    raw = load_pickle(path, "body model pickle")
    if not isinstance(raw, dict):
        raise InvalidInputError(f"body model pickle {path} holds a {type(raw).__name__}, expected a dict")
    return {str(key): _to_array(value, str(key)) for key, value in raw.items()}


def convert_body_model_to_npz(src: str | Path, dst: str | Path) -> Path:
    """One-time conversion of an official (possibly chumpy) .pkl body model to a .npz smplx reads directly."""
    arrays = load_model_arrays(src)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    np.savez(dst, **{key: np.asarray(value) for key, value in arrays.items()})
    return dst


def _keypoint_vertex_ids(kind: str, arrays: Mapping[str, Any], override: Mapping[str, int] | None) -> dict[str, int]:
    if override is not None:
        return dict(override)
    if "ivlm_keypoint_vertex_ids" in arrays:
        names = [str(n) for n in np.asarray(arrays["ivlm_keypoint_vertex_names"]).tolist()]
        return dict(zip(names, np.asarray(arrays["ivlm_keypoint_vertex_ids"]).tolist()))
    return dict(OFFICIAL_KEYPOINT_VERTEX_IDS[kind])


_HAND_KEYS = ("hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr")


def _with_hand_basis(data: dict[str, Any], path: Path, use_pca: bool, flat_hand_mean: bool) -> dict[str, Any]:
    """SMPL+H files straight from the MANO site lack the hand PCA basis (smplx's merge_smplh_mano.py adds it).

    With axis-angle hands and a flat hand mean the basis is never used, so an identity basis and zero means
    are exact stand-ins; otherwise the user must merge the MANO hand models into the file.
    """
    missing = [key for key in _HAND_KEYS if key not in data]
    if not missing:
        return data
    if use_pca or not flat_hand_mean:
        raise InvalidInputError(
            f"{path} has no {', '.join(missing)} (an unmerged SMPL+H file): PCA hands / the mean hand pose need "
            "them. Merge the MANO hand models into it with smplx's tools/merge_smplh_mano.py, or load with "
            "use_pca=False, flat_hand_mean=True")
    filled = dict(data)
    for side in ("l", "r"):
        filled.setdefault(f"hands_components{side}", np.eye(45))
        filled.setdefault(f"hands_mean{side}", np.zeros(45))
    return filled


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """smplx prints warnings (e.g. '10 shape coefficients') on stdout; route them to the log instead."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    if buffer.getvalue().strip():
        LOG.debug("smplx: %s", buffer.getvalue().strip())


def load_body_model(model_dir: str | Path, kind: str, gender: str = "neutral", num_betas: int = 10,
                    *, use_pca: bool = False, num_pca_comps: int = 6, flat_hand_mean: bool = True,
                    num_expression_coeffs: int = 10, batch_size: int = 1,
                    keypoint_vertex_ids: Mapping[str, int] | None = None,
                    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                    **smplx_kwargs: Any) -> smplx.SMPLX | smplx.SMPLH:
    """A `smplx.SMPLX` or `smplx.SMPLH` module built from the user's model file (see BODY_MODEL_LAYOUT).

    Hands default to 45-D axis-angle with a flat mean (what the canonical renders and most regressors use);
    pass `use_pca=True, flat_hand_mean=False` for PCA hand poses. `keypoint_vertex_ids` overrides the
    vertices smplx appends as extra joints (nose, eyes, ears, feet, fingertips); by default the official ids,
    or the ids stored in the file (synthetic test models).
    """
    path = find_body_model_file(model_dir, kind, gender)
    common = dict(gender=gender, num_betas=num_betas, use_pca=use_pca, num_pca_comps=num_pca_comps,
                  flat_hand_mean=flat_hand_mean, batch_size=batch_size, dtype=dtype, **smplx_kwargs)
    arrays = load_model_arrays(path)  # allow-listed pkl / allow_pickle=False npz: nothing in the file runs
    with _quiet_stdout():
        if kind == "smplh":
            data = _with_hand_basis(arrays, path, use_pca=use_pca, flat_hand_mean=flat_hand_mean)
            model = smplx.SMPLH(str(path), data_struct=Struct(**data), **common)
        else:  # smplx.SMPLX only reads files: hand it the checked numeric arrays in a temporary npz
            with tempfile.TemporaryDirectory(prefix="ivlm_smplx_") as tmp:
                npz = Path(tmp) / f"{path.stem}.npz"
                numeric = {key: np.asarray(value) for key, value in arrays.items()}
                if any(value.dtype.hasobject for value in numeric.values()):  # never true after the loaders
                    raise InvalidInputError(f"body model {path} holds Python objects; refusing it")
                np.savez(npz, **numeric)
                model = smplx.SMPLX(str(npz), ext="npz", num_expression_coeffs=num_expression_coeffs,
                                    **common)
    keypoints = _keypoint_vertex_ids(kind, arrays, keypoint_vertex_ids)
    num_vertices = model.get_num_verts()
    if max(keypoints.values()) >= num_vertices:
        raise InvalidInputError(
            f"{path} has {num_vertices} vertices but its keypoint vertex ids reach "
            f"{max(keypoints.values())}: this is not an official model file; pass keypoint_vertex_ids= "
            "for its topology")
    model.vertex_joint_selector = VertexJointSelector(vertex_ids=keypoints)
    model.model_file = path
    return model.to(device=device)


def vitruvian_body_pose() -> torch.Tensor:
    """(1, 63) axis-angle body pose of the canonical renders: all zero but the hips at +-30 deg about z."""
    pose = torch.zeros(1, 21, 3)
    angle = np.deg2rad(VITRUVIAN_HIP_ANGLE_DEG)
    pose[0, 0, 2] = angle  # left hip (SMPL joint 1)
    pose[0, 1, 2] = -angle  # right hip (SMPL joint 2)
    return pose.reshape(1, 63)


def canonical_vitruvian_mesh(model_dir: str | Path, gender: str = "neutral") -> tuple[np.ndarray, np.ndarray]:
    """The SMPL-H body InteractVLM renders for human contact: zero betas, identity orientation, flat hands,
    Vitruvian hips. Returns (vertices (6890, 3) float32, faces (F, 3) int64)."""
    model = load_body_model(model_dir, "smplh", gender, use_pca=False, flat_hand_mean=True)
    with torch.no_grad():
        output = model(body_pose=vitruvian_body_pose(), return_verts=True)
    return output.vertices[0].cpu().numpy().astype(np.float32), np.asarray(model.faces, dtype=np.int64)


@dataclass
class PosedMesh:
    """Output of `posed_mesh`. Tensors keep autograd; unpacks as (vertices, faces) per the module contract."""

    vertices: torch.Tensor  # (B, N, 3)
    faces: np.ndarray  # (F, 3) int64
    joints: torch.Tensor  # (B, J, 3): skeleton joints, then keypoint vertices (and SMPL-X face landmarks)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.vertices, self.faces))


_POSE_SIZES = {"global_orient": 3, "body_pose": 63, "jaw_pose": 3, "leye_pose": 3, "reye_pose": 3,
               "transl": 3}


def _hand_size(model: smplx.SMPLH) -> int:
    return model.num_pca_comps if model.use_pca else 45


def posed_mesh(model: smplx.SMPLX | smplx.SMPLH, **params: Any) -> PosedMesh:
    """Run the body model with explicit parameters (numpy or torch, batched (B, D) or single (D,)).

    Accepted names: betas, global_orient, body_pose, left_hand_pose, right_hand_pose (45-D axis-angle or the
    model's PCA size), transl, and for SMPL-X also jaw_pose, leye_pose, reye_pose, expression. Missing ones
    are zero, so results never depend on the module's internal parameter state.
    """
    sizes = dict(_POSE_SIZES, betas=model.num_betas, left_hand_pose=_hand_size(model),
                 right_hand_pose=_hand_size(model))
    if isinstance(model, smplx.SMPLX):
        sizes["expression"] = model.num_expression_coeffs
    else:
        for key in ("jaw_pose", "leye_pose", "reye_pose"):
            sizes.pop(key)
    unknown = set(params) - set(sizes)
    if unknown:
        raise InvalidInputError(f"unknown body model parameters {sorted(unknown)}; expected {sorted(sizes)}")
    ref = model.shapedirs
    tensors: dict[str, torch.Tensor] = {}
    for key, value in params.items():
        if value is None:
            continue
        t = torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
        if t.numel() == 0 or t.numel() % sizes[key] != 0 or t.shape[-1] not in (sizes[key], 3):
            raise InvalidInputError(
                f"{key} must have {sizes[key]} values per sample, got shape {tuple(t.shape)}")
        t = t.reshape(-1, sizes[key])
        tensors[key] = t
    batch = max([t.shape[0] for t in tensors.values()], default=1)
    for key, size in sizes.items():
        if key not in tensors:
            tensors[key] = torch.zeros(batch, size, dtype=ref.dtype, device=ref.device)
        elif tensors[key].shape[0] != batch:
            if tensors[key].shape[0] != 1:
                raise InvalidInputError(f"{key} has batch {tensors[key].shape[0]}, others have {batch}")
            tensors[key] = tensors[key].expand(batch, -1)
    output = model(**tensors, return_verts=True)
    return PosedMesh(vertices=output.vertices, faces=np.asarray(model.faces, dtype=np.int64),
                     joints=output.joints)
