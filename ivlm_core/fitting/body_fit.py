"""SMPLify-style fit of an SMPL-X body to 2D/3D human keypoints with the true camera intrinsics.

The body is placed in the OpenCV camera frame of the image (x right, y down, z forward, metres), so the
object fit and the ROS node can use it as the human in the scene. Terms (weights in `BodyFitConfig`):

* robust (Geman-McClure), confidence-weighted reprojection of mediapipe landmarks mapped to SMPL-X joints
  and keypoint vertices, through K;
* 3D guidance: bone directions of mediapipe's metric world landmarks (rotated onto the camera ray through
  the person), which resolve the depth ordering that 2D alone leaves open;
* a Gaussian (L2) pose prior around a relaxed pose, elbow/knee hyper-extension penalties, an L2 shape prior;
* depth from height: the initial depth is where the nominal-height body (mean shape) projects to the detected
  keypoints, and a weak term keeps the depth there (monocular scale is otherwise ambiguous);
* for streams: warm start from the previous frame, a temporal term, a cold re-fit when the warm fit drifts,
  exponential smoothing with a reset on large jumps (`StreamBodyFitter`, shared by `CameraBodyPlacer` and the
  tracker).

Without SMPL-X files or mediapipe the placer reports `placed=False` and a status that says why.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from smplx.joint_names import JOINT_NAMES

from ivlm_core.errors import InvalidInputError, IvlmError
from ivlm_core.fitting.body_layer import KEYPOINT_VERTEX_NAMES, BodyLayer
from ivlm_core.fitting.keypoints import HAND_LANDMARK_NAMES, POSE_INDEX, HumanKeypoints
from ivlm_core.geometry.intrinsics import checked_camera_k

LOG = logging.getLogger(__name__)

SMPLX_JOINT_NAMES: tuple[str, ...] = tuple(JOINT_NAMES[:55])
# Model points = the 55 SMPL-X joints followed by the 21 keypoint vertices.
MODEL_POINT_NAMES: tuple[str, ...] = SMPLX_JOINT_NAMES + KEYPOINT_VERTEX_NAMES
_POINT = {name: i for i, name in enumerate(MODEL_POINT_NAMES)}
# When a model has no keypoint vertices for its topology, these joints stand in (with a lower weight).
_VERTEX_FALLBACK = {
    "nose": "head", "reye": "right_eye_smplhf", "leye": "left_eye_smplhf", "rear": "head", "lear": "head",
    "LBigToe": "left_foot", "LSmallToe": "left_foot", "LHeel": "left_ankle", "RBigToe": "right_foot",
    "RSmallToe": "right_foot", "RHeel": "right_ankle", "lthumb": "left_thumb3", "lindex": "left_index3",
    "lmiddle": "left_middle3", "lring": "left_ring3", "lpinky": "left_pinky3", "rthumb": "right_thumb3",
    "rindex": "right_index3", "rmiddle": "right_middle3", "rring": "right_ring3", "rpinky": "right_pinky3",
}  # fmt: skip

# mediapipe pose landmark -> SMPL-X model point, relative weight. Hip landmarks sit higher and wider than the
# SMPL-X hip joints, hence their lower weight; knuckle landmarks are dropped when a hand was detected.
POSE_TO_SMPLX: tuple[tuple[str, str, float], ...] = (
    ("nose", "nose", 0.5), ("left_eye", "leye", 0.5), ("right_eye", "reye", 0.5),
    ("left_ear", "lear", 0.5), ("right_ear", "rear", 0.5),
    ("left_shoulder", "left_shoulder", 1.0), ("right_shoulder", "right_shoulder", 1.0),
    ("left_elbow", "left_elbow", 1.0), ("right_elbow", "right_elbow", 1.0),
    ("left_wrist", "left_wrist", 1.0), ("right_wrist", "right_wrist", 1.0),
    ("left_pinky", "left_pinky1", 0.4), ("right_pinky", "right_pinky1", 0.4),
    ("left_index", "left_index1", 0.4), ("right_index", "right_index1", 0.4),
    ("left_thumb", "left_thumb2", 0.3), ("right_thumb", "right_thumb2", 0.3),
    ("left_hip", "left_hip", 0.6), ("right_hip", "right_hip", 0.6),
    ("left_knee", "left_knee", 1.0), ("right_knee", "right_knee", 1.0),
    ("left_ankle", "left_ankle", 1.0), ("right_ankle", "right_ankle", 1.0),
    ("left_heel", "LHeel", 0.7), ("right_heel", "RHeel", 0.7),
    ("left_foot_index", "LBigToe", 0.7), ("right_foot_index", "RBigToe", 0.7),
)  # fmt: skip
_HAND_FINGER_ORDER = ("thumb", "index", "middle", "ring", "pinky")
_KNUCKLE_LANDMARKS = ("pinky", "index", "thumb")


def _hand_model_points(side: str) -> tuple[str, ...]:
    """SMPL-X model point for each of the 21 mediapipe hand landmarks (wrist, then 4 per finger)."""
    names = [f"{side}_wrist"]
    for finger in _HAND_FINGER_ORDER:
        names += [f"{side}_{finger}{k}" for k in (1, 2, 3)] + [f"{side[0]}{finger}"]
    return tuple(names)


# Bones whose 3D direction mediapipe's world landmarks give: (from landmarks, to landmarks) averaged.
_BONES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("left_shoulder",), ("left_elbow",)), (("left_elbow",), ("left_wrist",)),
    (("right_shoulder",), ("right_elbow",)), (("right_elbow",), ("right_wrist",)),
    (("left_hip",), ("left_knee",)), (("left_knee",), ("left_ankle",)),
    (("right_hip",), ("right_knee",)), (("right_knee",), ("right_ankle",)),
    (("left_ankle",), ("left_foot_index",)), (("right_ankle",), ("right_foot_index",)),
    (("right_shoulder",), ("left_shoulder",)), (("right_hip",), ("left_hip",)),
    (("left_hip", "right_hip"), ("left_shoulder", "right_shoulder")),
    (("left_shoulder", "right_shoulder"), ("nose",)), (("right_ear",), ("left_ear",)),
)  # fmt: skip
_POSE_TO_POINT = {mp: smplx_name for mp, smplx_name, _ in POSE_TO_SMPLX}


@dataclass
class BodyFitConfig:
    """Weights and schedules of the keypoint fit (defaults tuned on synthetic data, not on the sample photos)."""

    num_betas: int = 10
    min_confidence: float = 0.3  # landmarks below this visibility are ignored in the reprojection term
    robust_sigma: float = 0.05  # Geman-McClure scale, fraction of the image diagonal
    w_reprojection: float = 1.0e4  # on squared residuals in image-diagonal units
    w_bone_direction: float = 40.0  # on (1 - cos) between model and mediapipe-world bones
    w_pose_prior: float = 0.05
    w_angle_prior: float = 0.5
    w_hand_prior: float = 0.02
    w_shape_prior: float = 0.5
    w_depth: float = 2.0  # on the squared relative deviation from the depth-from-height estimate
    w_temporal: float = 2.0  # on squared parameter change from the previous frame (streams)
    nominal_height_m: float = 1.70
    lr: float = 0.03
    iters_pose_init: int = 60  # 3D-guided pose before the camera is known
    iters_camera: int = 40  # translation + orientation against the 2D keypoints
    iters_full: int = 150  # everything
    iters_warm: int = 60  # stream frames warm-started from the previous fit
    smoothing: float = 0.6  # weight of the new frame in the exponential smoothing (1 = no smoothing)
    reset_translation_m: float = 0.5  # a jump larger than this restarts smoothing (new person / cut)
    reset_rotation_deg: float = 60.0
    refit_error: float = 0.08  # warm fits worse than this (fraction of the diagonal) are redone from scratch

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> BodyFitConfig:
        """From a config mapping (e.g. a `body_fit:` YAML section); unknown keys are an error, not ignored."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InvalidInputError(f"unknown body fit settings {unknown}; known: {sorted(known)}")
        converted = {}
        for name, value in values.items():
            kind = int if known[name] in (int, "int") else float
            try:
                converted[name] = kind(value)
            except (TypeError, ValueError) as err:
                raise InvalidInputError(f"body fit setting {name} must be a number, got {value!r}") from err
        return cls(**converted)

    @classmethod
    def fast(cls) -> BodyFitConfig:
        """Fewer iterations (tests, low-latency streams)."""
        return cls(iters_pose_init=30, iters_camera=25, iters_full=70, iters_warm=30)


@dataclass
class KeypointTargets:
    """2D targets in pixels for model points, with per-point weights (0 = ignored)."""

    names: tuple[str, ...]  # mediapipe landmark names ("pose:left_wrist", "left_hand:index_tip", ...)
    model_points: np.ndarray  # (K,) int64 index into MODEL_POINT_NAMES
    points_2d: np.ndarray  # (K, 2) float32 pixels
    weights: np.ndarray  # (K,) float32
    image_size: tuple[int, int]

    @property
    def diagonal(self) -> float:
        return float(np.hypot(*self.image_size))


@dataclass
class BodyFitResult:
    """A fitted (or not placed) body in the camera frame; `placement_kwargs()` feeds pipeline.BodyPlacement."""

    placed: bool
    status: str
    params: dict[str, np.ndarray] = field(default_factory=dict)
    vertices: np.ndarray | None = None  # (N, 3) float32, camera frame, metres
    faces: np.ndarray | None = None  # (F, 3) int64
    joints: np.ndarray | None = None  # (55, 3) float32, camera frame
    targets: KeypointTargets | None = None
    fitted_2d: np.ndarray | None = None  # (K, 2) reprojection of the targets' model points
    camera_k: np.ndarray | None = None  # (3, 3) the intrinsics the body was fitted with
    reprojection_error_px: float = float("nan")  # confidence-weighted mean over the used keypoints
    reprojection_error_rel: float = float("nan")  # the same as a fraction of the image diagonal
    losses: dict[str, float] = field(default_factory=dict)
    iterations: int = 0
    fit_time_s: float = 0.0
    warm_started: bool = False
    smoothed: bool = False

    def placement_kwargs(self) -> dict[str, Any]:
        """Fields of `ivlm_core.pipeline.BodyPlacement` (placed, status, vertices, faces, params, joints)."""
        return {
            "placed": self.placed,
            "status": self.status,
            "vertices": self.vertices,
            "faces": self.faces,
            "params": dict(self.params),
            "joints": self.joints,
        }


PARAM_SIZES: dict[str, int] = {
    "betas": 10, "global_orient": 3, "body_pose": 63, "left_hand_pose": 45, "right_hand_pose": 45,
    "jaw_pose": 3, "expression": 10, "transl": 3,
}  # fmt: skip


def build_targets(keypoints: HumanKeypoints, layer: BodyLayer, min_confidence: float = 0.3) -> KeypointTargets:
    """Map detected landmarks to model points; hands (if detected) replace the pose knuckle landmarks."""
    names: list[str] = []
    points: list[int] = []
    xy: list[np.ndarray] = []
    weights: list[float] = []
    hand_sides = set(keypoints.hands)

    def add(name: str, point: str, pixel: np.ndarray, weight: float) -> None:
        if point in KEYPOINT_VERTEX_NAMES and point not in layer.keypoint_vertex_ids:
            point, weight = _VERTEX_FALLBACK[point], 0.3 * weight
        names.append(name)
        points.append(_POINT[point])
        xy.append(np.asarray(pixel, dtype=np.float32))
        weights.append(float(weight))

    for mp_name, point, weight in POSE_TO_SMPLX:
        side = mp_name.split("_")[0]
        if side in hand_sides and mp_name.split("_", 1)[1] in _KNUCKLE_LANDMARKS:
            continue
        conf = float(keypoints.pose_confidence[POSE_INDEX[mp_name]])
        add(f"pose:{mp_name}", point, keypoints.pose_2d[POSE_INDEX[mp_name]], weight * conf * (conf >= min_confidence))
    for side, hand in keypoints.hands.items():
        for k, point in enumerate(_hand_model_points(side)):
            if k == 0:
                continue  # the pose wrist already constrains it
            conf = float(hand.confidence[k])
            add(
                f"{side}_hand:{HAND_LANDMARK_NAMES[k]}", point, hand.points_2d[k], 0.5 * conf * (conf >= min_confidence)
            )
    return KeypointTargets(
        names=tuple(names),
        model_points=np.array(points, dtype=np.int64),
        points_2d=np.stack(xy),
        weights=np.array(weights, dtype=np.float32),
        image_size=keypoints.image_size,
    )


def camera_ray_rotation(pixel: np.ndarray, camera_k: np.ndarray) -> np.ndarray:
    """Rotation taking the optical axis onto the ray through `pixel` (mediapipe's crop camera -> camera)."""
    ray = np.linalg.solve(camera_k, np.array([pixel[0], pixel[1], 1.0]))
    ray /= np.linalg.norm(ray)
    axis = np.cross([0.0, 0.0, 1.0], ray)
    angle = np.arctan2(np.linalg.norm(axis), ray[2])
    if np.linalg.norm(axis) < 1e-9:
        return np.eye(3)
    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()


def depth_from_height(height_px: float, focal_px: float, nominal_height_m: float = 1.70) -> float:
    """Pinhole depth at which a person of nominal height spans `height_px` pixels."""
    return float(focal_px * nominal_height_m / max(height_px, 1.0))


def _kabsch(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation R minimising ||R source_i - target_i|| over centred point sets (no reflection)."""
    a = source - source.mean(axis=0)
    b = target - target.mean(axis=0)
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def _gmof(squared: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure on squared residuals: quadratic near 0, saturating at sigma^2 for outliers."""
    return sigma**2 * squared / (sigma**2 + squared)


def _relaxed_body_pose() -> np.ndarray:
    """Prior mean: zero pose with the arms lowered ~35 deg (a T-pose mean drags arms up)."""
    pose = np.zeros((21, 3), dtype=np.float32)
    pose[15, 2] = -0.6  # left shoulder (joint 16)
    pose[16, 2] = 0.6  # right shoulder (joint 17)
    return pose.reshape(63)


# Per-dimension pose prior weights: stiff spine/feet/collars, free elbow and knee hinge axes.
_POSE_PRIOR_WEIGHTS = np.ones((21, 3), dtype=np.float32)
_POSE_PRIOR_WEIGHTS[[2, 5, 8]] = 3.0  # spine1-3
_POSE_PRIOR_WEIGHTS[[9, 10]] = 3.0  # feet
_POSE_PRIOR_WEIGHTS[[12, 13]] = 3.0  # collars
_POSE_PRIOR_WEIGHTS[[3, 4]] = (0.2, 4.0, 4.0)  # knees bend about x
_POSE_PRIOR_WEIGHTS[[17, 18]] = (4.0, 0.2, 4.0)  # elbows bend about y
_POSE_PRIOR_WEIGHTS = _POSE_PRIOR_WEIGHTS.reshape(63)
# SMPLify's hyper-extension penalty: left/right elbow about y, left/right knee about x (body_pose indices).
_ANGLE_PRIOR_INDEX = [52, 55, 9, 12]
_ANGLE_PRIOR_SIGN = [1.0, -1.0, -1.0, -1.0]


class KeypointBodyFitter:
    """Fits SMPL-X parameters to one frame's keypoints with the camera intrinsics."""

    def __init__(self, layer: BodyLayer, config: BodyFitConfig | None = None) -> None:
        self.layer = layer
        self.config = config or BodyFitConfig()
        keypoint_ids = layer.keypoint_vertex_ids
        self._vertex_ids = tuple(keypoint_ids[n] for n in KEYPOINT_VERTEX_NAMES) if keypoint_ids else None
        self._pose_mean = torch.from_numpy(_relaxed_body_pose())
        self._pose_weights = torch.from_numpy(_POSE_PRIOR_WEIGHTS)

    # -- model points --------------------------------------------------------------------------------------
    def model_points(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, 76, 3): SMPL-X joints then keypoint vertices (their joint fallbacks without vertex ids)."""
        out = self.layer(dict(params), self._vertex_ids or (0,))
        if self._vertex_ids is None:
            fallback = [_POINT[_VERTEX_FALLBACK[n]] for n in KEYPOINT_VERTEX_NAMES]
            return torch.cat([out.joints, out.joints[:, fallback]], dim=1)
        return torch.cat([out.joints, out.vertices], dim=1)

    # -- fitting -------------------------------------------------------------------------------------------
    def fit(
        self,
        keypoints: HumanKeypoints,
        camera_k: np.ndarray,
        init: Mapping[str, np.ndarray] | None = None,
        mesh: bool = True,
    ) -> BodyFitResult:
        """Fit from scratch, or warm-started from `init` (the previous frame's params) with a temporal term.

        `mesh=False` skips skinning the full mesh (`vertices` is None), for callers that change the parameters
        afterwards (a tracker's smoothing) and build the mesh once with `result_with_params`.
        """
        with single_torch_thread():
            return self._fit(keypoints, camera_k, init, mesh)

    def _fit(
        self, keypoints: HumanKeypoints, camera_k: np.ndarray, init: Mapping[str, np.ndarray] | None, mesh: bool
    ) -> BodyFitResult:
        start = time.perf_counter()
        cfg = self.config
        k = checked_camera_k(camera_k)  # the pipeline's and the tracker's K check
        targets = build_targets(keypoints, self.layer, cfg.min_confidence)
        if np.count_nonzero(targets.weights) < 4:
            return BodyFitResult(False, "body not placed: fewer than 4 confident body keypoints", targets=targets)
        ctx = _FitContext.build(self, targets, keypoints, k)
        iterations = 0
        if init is None:
            params = self._initial_params(ctx, keypoints)
            iterations += self._optimise(params, ctx, ("global_orient", "body_pose"), cfg.iters_pose_init, use_2d=False)
            params["transl"] = torch.from_numpy(self._initial_translation(params, ctx))[None]
            ctx.depth_prior = float(params["transl"][0, 2])
            iterations += self._optimise(params, ctx, ("transl", "global_orient"), cfg.iters_camera)
            full_iters = cfg.iters_full
            prev = None
        else:
            params = {
                name: torch.as_tensor(np.asarray(init[name], dtype=np.float32)).reshape(1, -1).clone()
                for name in PARAM_SIZES
                if name in init
            }
            params = self._complete(params)
            ctx.depth_prior = float(params["transl"][0, 2])
            prev = {name: value.clone() for name, value in params.items()}
            full_iters = cfg.iters_warm
        free = ["global_orient", "body_pose", "betas", "transl"]
        free += [f"{side}_hand_pose" for side in ("left", "right") if side in keypoints.hands]
        iterations += self._optimise(params, ctx, tuple(free), full_iters, previous=prev)
        result = self._result(params, ctx, iterations, time.perf_counter() - start, mesh)
        result.warm_started = init is not None
        return result

    def _complete(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name, size in PARAM_SIZES.items():
            if name == "betas":
                size = self.layer.num_betas
            if name not in params:
                params[name] = torch.zeros(1, size)
        params["betas"] = params["betas"][:, : self.layer.num_betas]
        return params

    def _initial_params(self, ctx: _FitContext, keypoints: HumanKeypoints) -> dict[str, torch.Tensor]:
        params = self._complete(
            {
                "body_pose": self._pose_mean.clone()[None],
                "left_hand_pose": self.layer.left_hand_rest.clone()[None],
                "right_hand_pose": self.layer.right_hand_rest.clone()[None],
            }
        )
        # Global orientation: align the rest torso (shoulders, hips) with mediapipe's 3D torso.
        torso = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
        with torch.no_grad():
            rest = self.model_points(params)[0].numpy()
        source = np.stack([rest[_POINT[_POSE_TO_POINT[n]]] for n in torso])
        target = np.stack([ctx.world_cam[POSE_INDEX[n]] for n in torso])
        rotation = _kabsch(source, target)
        params["global_orient"] = torch.from_numpy(Rotation.from_matrix(rotation).as_rotvec().astype(np.float32))[None]
        return params

    def _initial_translation(self, params: dict[str, torch.Tensor], ctx: _FitContext) -> np.ndarray:
        """Depth from height: translation at which the nominal (mean-shape) body meets the 2D keypoints.

        Linear least squares on u (Z + tz) = fx (X + tx) + cx (Z + tz) (and v), over the weighted keypoints;
        unlike a head-to-heel pixel height it also works for partly visible people.
        """
        with torch.no_grad():
            points = self.model_points({**params, "transl": torch.zeros(1, 3)})[0].numpy()[ctx.model_points]
        return solve_translation(points, ctx.points_2d, ctx.weights_np, ctx.camera_k, self.config.nominal_height_m)

    def _optimise(
        self,
        params: dict[str, torch.Tensor],
        ctx: _FitContext,
        free: tuple[str, ...],
        iterations: int,
        use_2d: bool = True,
        previous: dict[str, torch.Tensor] | None = None,
    ) -> int:
        if iterations <= 0:
            return 0
        sizes = [params[name].shape[-1] for name in free]
        flat = torch.cat([params[name].reshape(-1) for name in free]).clone().requires_grad_(True)
        optimiser = FlatAdam(flat, lr=self.config.lr)
        for _ in range(iterations):
            current = {**params, **{name: piece[None] for name, piece in zip(free, flat.split(sizes))}}
            terms = self._loss_terms(current, ctx, use_2d=use_2d, previous=previous)
            (gradient,) = torch.autograd.grad(sum(terms.values()), flat)
            optimiser.step(gradient)
        for name, piece in zip(free, flat.detach().split(sizes)):
            params[name] = piece[None].clone()
        return iterations

    def _loss_terms(
        self,
        params: dict[str, torch.Tensor],
        ctx: _FitContext,
        use_2d: bool = True,
        previous: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        points = self.model_points(params)[0]
        terms: dict[str, torch.Tensor] = {}
        if use_2d:
            projected = _project(points[ctx.model_points_t], ctx.camera_k_t)
            residual = ((projected - ctx.points_2d_t) / ctx.diagonal).pow(2).sum(dim=-1)
            terms["reprojection"] = (
                cfg.w_reprojection * (ctx.weights_t * _gmof(residual, cfg.robust_sigma)).sum() / ctx.weight_sum
            )
            terms["depth"] = cfg.w_depth * ((params["transl"][0, 2] - ctx.depth_prior) / ctx.depth_prior) ** 2
        if ctx.bones_from.shape[0]:
            bone = ctx.bones_to @ points - ctx.bones_from @ points
            cosine = torch.nn.functional.cosine_similarity(bone, ctx.bone_dirs_t, dim=-1)
            terms["bone_direction"] = (
                cfg.w_bone_direction * (ctx.bone_weights_t * (1 - cosine)).sum() / ctx.bone_weight_sum
            )
        pose = params["body_pose"][0]
        terms["pose_prior"] = cfg.w_pose_prior * (self._pose_weights * (pose - self._pose_mean) ** 2).sum()
        hyper = pose[_ANGLE_PRIOR_INDEX] * torch.tensor(_ANGLE_PRIOR_SIGN)
        terms["angle_prior"] = cfg.w_angle_prior * torch.exp(hyper).pow(2).sum()
        hands = torch.cat(
            [
                params["left_hand_pose"][0] - self.layer.left_hand_rest,
                params["right_hand_pose"][0] - self.layer.right_hand_rest,
            ]
        )
        terms["hand_prior"] = cfg.w_hand_prior * hands.pow(2).sum()
        terms["shape_prior"] = cfg.w_shape_prior * params["betas"].pow(2).sum()
        if previous is not None:
            change = sum(((params[n] - previous[n]) ** 2).sum() for n in ("global_orient", "body_pose", "betas"))
            change = change + 10.0 * ((params["transl"] - previous["transl"]) ** 2).sum()
            terms["temporal"] = cfg.w_temporal * change
        return terms

    def _result(
        self, params: dict[str, torch.Tensor], ctx: _FitContext, iterations: int, seconds: float, mesh: bool = True
    ) -> BodyFitResult:
        with torch.no_grad():
            terms = {name: float(v) for name, v in self._loss_terms(params, ctx).items()}
            points = self.model_points(params)[0]
            fitted = _project(points[ctx.model_points_t], ctx.camera_k_t).numpy()
            skinned = self.layer(params) if mesh else None
        error = np.linalg.norm(fitted - ctx.points_2d, axis=1)
        mean_px = float((error * ctx.weights_np).sum() / max(ctx.weights_np.sum(), 1e-9))
        return BodyFitResult(
            placed=True,
            status=f"body placed by the keypoint fit (reprojection {mean_px:.1f} px)",
            params={name: value[0].numpy().astype(np.float32).copy() for name, value in params.items()},
            vertices=skinned.vertices[0].numpy().astype(np.float32) if skinned is not None else None,
            faces=self.layer.faces,
            joints=points[: len(SMPLX_JOINT_NAMES)].numpy().astype(np.float32),
            targets=ctx.targets,
            fitted_2d=fitted.astype(np.float32),
            camera_k=ctx.camera_k.copy(),
            reprojection_error_px=mean_px,
            reprojection_error_rel=mean_px / ctx.diagonal,
            losses=terms,
            iterations=iterations,
            fit_time_s=seconds,
        )


class FlatAdam:
    """torch.optim.Adam's update (betas 0.9 / 0.999, eps 1e-8, bias-corrected) on one flat parameter tensor.

    Why: the fit's parameters are ~80 numbers; torch's optimiser loops over parameter tensors in Python and
    its step cost as much as the forward pass of the tiny model, which matters at camera rate. Same maths,
    a handful of tensor ops per step.
    """

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.param, self.lr, self.betas = param, lr, betas
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = 0

    @torch.no_grad()
    def step(self, gradient: torch.Tensor) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        self.exp_avg.lerp_(gradient, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        bias1, bias2 = 1 - beta1**self.steps, 1 - beta2**self.steps
        denominator = (self.exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(1e-8)
        self.param.addcdiv_(self.exp_avg, denominator, value=-self.lr / bias1)


def solve_translation(
    points: np.ndarray, pixels: np.ndarray, weights: np.ndarray, camera_k: np.ndarray, nominal_height_m: float = 1.70
) -> np.ndarray:
    """Weighted least-squares translation t with K (points + t) ~ pixels (points fixed, metric).

    Falls back to depth-from-height of the keypoints' pixel extent if the system is degenerate.
    """
    fx, fy, cx, cy = camera_k[0, 0], camera_k[1, 1], camera_k[0, 2], camera_k[1, 2]
    used = weights > 0
    p, uv, w = points[used].astype(np.float64), pixels[used].astype(np.float64), np.sqrt(weights[used])
    du, dv = uv[:, 0] - cx, uv[:, 1] - cy
    zeros = np.zeros_like(du)
    a = np.concatenate([np.stack([-fx + zeros, zeros, du], 1), np.stack([zeros, -fy + zeros, dv], 1)])
    b = np.concatenate([fx * p[:, 0] - du * p[:, 2], fy * p[:, 1] - dv * p[:, 2]])
    ww = np.concatenate([w, w])
    if len(p) >= 2:
        t, *_ = np.linalg.lstsq(a * ww[:, None], b * ww, rcond=None)
        if np.all(np.isfinite(t)) and t[2] + p[:, 2].min() > 0.2:
            return t.astype(np.float32)
    extent = float(np.ptp(uv[:, 1])) if len(uv) else 1.0
    z = depth_from_height(extent, fy, nominal_height_m)
    centre = uv.mean(axis=0) if len(uv) else np.array([cx, cy])
    return np.array([(centre[0] - cx) / fx * z, (centre[1] - cy) / fy * z, z], dtype=np.float32)


@contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread: the body's tensors are tiny, extra threads only spin (5x slower on a
    loaded 2-core CPU). With torch's OpenMP backend the count is the calling thread's (and the default of threads
    started later), so the node's other loops keep theirs; it is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _project(points: torch.Tensor, camera_k: torch.Tensor) -> torch.Tensor:
    z = points[:, 2:3].clamp(min=1e-3)
    return (points[:, :2] / z) * torch.stack([camera_k[0, 0], camera_k[1, 1]]) + torch.stack(
        [camera_k[0, 2], camera_k[1, 2]]
    )


@dataclass
class _FitContext:
    """Per-frame constants of the losses (targets as tensors, bone directions in the camera frame)."""

    targets: KeypointTargets
    camera_k: np.ndarray
    camera_k_t: torch.Tensor
    model_points: np.ndarray
    model_points_t: torch.Tensor
    points_2d: np.ndarray
    points_2d_t: torch.Tensor
    weights_np: np.ndarray
    weights_t: torch.Tensor
    weight_sum: float
    diagonal: float
    world_cam: np.ndarray  # (33, 3) mediapipe world landmarks rotated into the camera frame
    bones_from: torch.Tensor  # (nb, 76) averaging matrices over model points
    bones_to: torch.Tensor
    bone_dirs_t: torch.Tensor  # (nb, 3)
    bone_weights_t: torch.Tensor
    bone_weight_sum: float
    depth_prior: float = 1.0

    @classmethod
    def build(
        cls, fitter: KeypointBodyFitter, targets: KeypointTargets, keypoints: HumanKeypoints, camera_k: np.ndarray
    ) -> _FitContext:
        hips = keypoints.pose_2d[[POSE_INDEX["left_hip"], POSE_INDEX["right_hip"]]].mean(axis=0)
        world_cam = keypoints.pose_world.astype(np.float64) @ camera_ray_rotation(hips, camera_k).T
        rows_from, rows_to, dirs, bone_weights = [], [], [], []
        conf = keypoints.pose_confidence
        for src, dst in _BONES:
            a = np.zeros(len(MODEL_POINT_NAMES), dtype=np.float32)
            b = np.zeros(len(MODEL_POINT_NAMES), dtype=np.float32)
            for name in src:
                a[_POINT[_model_point(fitter, name)]] += 1.0 / len(src)
            for name in dst:
                b[_POINT[_model_point(fitter, name)]] += 1.0 / len(dst)
            direction = world_cam[[POSE_INDEX[n] for n in dst]].mean(0) - world_cam[[POSE_INDEX[n] for n in src]].mean(
                0
            )
            visibility = min(float(conf[POSE_INDEX[n]]) for n in (*src, *dst))
            rows_from.append(a)
            rows_to.append(b)
            dirs.append(direction)
            bone_weights.append(0.3 + 0.7 * visibility)  # occluded limbs: mediapipe's guess still beats none
        weights = targets.weights.astype(np.float32)
        return cls(
            targets=targets,
            camera_k=camera_k,
            camera_k_t=torch.as_tensor(camera_k, dtype=torch.float32),
            model_points=targets.model_points,
            model_points_t=torch.as_tensor(targets.model_points),
            points_2d=targets.points_2d,
            points_2d_t=torch.as_tensor(targets.points_2d),
            weights_np=weights,
            weights_t=torch.as_tensor(weights),
            weight_sum=float(max(weights.sum(), 1e-6)),
            diagonal=targets.diagonal,
            world_cam=world_cam,
            bones_from=torch.as_tensor(np.stack(rows_from)),
            bones_to=torch.as_tensor(np.stack(rows_to)),
            bone_dirs_t=torch.as_tensor(np.stack(dirs), dtype=torch.float32),
            bone_weights_t=torch.as_tensor(bone_weights, dtype=torch.float32),
            bone_weight_sum=float(sum(bone_weights)),
        )


def _model_point(fitter: KeypointBodyFitter, landmark: str) -> str:
    point = _POSE_TO_POINT[landmark]
    if point in KEYPOINT_VERTEX_NAMES and point not in fitter.layer.keypoint_vertex_ids:
        return _VERTEX_FALLBACK[point]
    return point


# -- streams: smoothing ------------------------------------------------------------------------------------
_ROTATION_PARAMS = ("global_orient", "body_pose", "left_hand_pose", "right_hand_pose", "jaw_pose")


def smooth_params(
    previous: Mapping[str, np.ndarray], current: Mapping[str, np.ndarray], alpha: float
) -> dict[str, np.ndarray]:
    """Exponential smoothing: rotations by per-joint slerp (axis-angle is not linear near pi), others lerp."""
    out: dict[str, np.ndarray] = {}
    for name, value in current.items():
        if name not in previous or np.shape(previous[name]) != np.shape(value):
            out[name] = np.asarray(value, dtype=np.float32).copy()
            continue
        if name in _ROTATION_PARAMS:
            a = Rotation.from_rotvec(np.asarray(previous[name], dtype=np.float64).reshape(-1, 3))
            b = Rotation.from_rotvec(np.asarray(value, dtype=np.float64).reshape(-1, 3))
            # slerp(a, b, alpha) = (alpha * log(b a^-1)) a, for all joints at once
            mixed = Rotation.from_rotvec(alpha * (b * a.inv()).as_rotvec()) * a
            out[name] = mixed.as_rotvec().reshape(-1).astype(np.float32)
        else:
            out[name] = ((1 - alpha) * np.asarray(previous[name]) + alpha * np.asarray(value)).astype(np.float32)
    return out


def is_jump(previous: Mapping[str, np.ndarray], current: Mapping[str, np.ndarray], config: BodyFitConfig) -> bool:
    """True when the body moved too far for one frame (another person, a cut): smoothing restarts."""
    moved = float(np.linalg.norm(np.asarray(current["transl"]) - np.asarray(previous["transl"])))
    turn = Rotation.from_rotvec(current["global_orient"]) * Rotation.from_rotvec(previous["global_orient"]).inv()
    return moved > config.reset_translation_m or np.degrees(turn.magnitude()) > config.reset_rotation_deg


# -- streams: one person's body frame after frame -----------------------------------------------------------
@dataclass
class FrameFit:
    """One frame of `StreamBodyFitter.fit_frame`."""

    result: BodyFitResult  # placed: full mesh, `smoothed` set; not placed: the fit's reason
    reinit_reason: str = ""  # why the body was fitted cold; "" when the warm fit from the previous frame was kept


class StreamBodyFitter:
    """Fits one person's body frame after frame; `CameraBodyPlacer` (one person) and `BodyTracker` (one per
    track) share it, so warm start, re-fit and smoothing behave the same in both.

    A frame is warm-started from the previous frame's body (the warm fitter's `iters_warm`, with a temporal
    term). It is fitted cold (from scratch) instead when there is no previous body, when the caller gives a
    `reinit_reason` (a track that jumped in the image or came back after a loss), or when the warm fit drifted:
    not placed, or reprojecting worse than `refit_error` and than `drift_factor` x the previous frame's error (a
    person whose keypoints no body fits well, e.g. cut by the image edge, would otherwise be re-fitted every
    frame). A body jump between frames (`is_jump`) either triggers the same cold re-fit (`refit_on_jump`) or
    only restarts the smoothing. The cold fit replaces the warm one only when it reprojects better. A kept warm
    fit is smoothed with the previous body (`smooth_params`); the full mesh is skinned once, at the end.
    Thresholds and smoothing weight come from the warm fitter's `BodyFitConfig`.
    """

    def __init__(
        self,
        warm: KeypointBodyFitter,
        cold: KeypointBodyFitter | None = None,
        drift_factor: float = 0.0,
        refit_on_jump: bool = False,
    ) -> None:
        self.warm = warm
        self.cold = cold or warm
        self.drift_factor = drift_factor
        self.refit_on_jump = refit_on_jump

    def fit_frame(
        self,
        keypoints: HumanKeypoints,
        camera_k: np.ndarray,
        previous: BodyFitResult | None = None,
        reinit_reason: str = "",
    ) -> FrameFit:
        """This frame's body; `previous` is the last frame's placed body (None: the person is new)."""
        cfg = self.warm.config
        reason = reinit_reason or ("" if previous is not None else "no previous body")
        result = None
        if not reason:
            assert previous is not None
            result = self.warm.fit(keypoints, camera_k, init=previous.params, mesh=False)
            limit = max(cfg.refit_error, self.drift_factor * previous.reprojection_error_rel)
            if not result.placed or result.reprojection_error_rel > limit:
                reason = "warm fit drifted"
            elif self.refit_on_jump and is_jump(previous.params, result.params, cfg):
                reason = "body jump"
        if reason:
            cold = self.cold.fit(keypoints, camera_k, mesh=False)
            better = cold.placed and (
                result is None or not result.placed or cold.reprojection_error_rel < result.reprojection_error_rel
            )
            if result is None or better:
                result = cold
            else:
                reason = ""  # the cold fit did no better: keep the warm one
        if not result.placed:
            return FrameFit(result, reason)
        if not all(np.all(np.isfinite(value)) for value in result.params.values()):
            status = "body not placed: the fit diverged (non-finite parameters; broken keypoints?)"
            return FrameFit(BodyFitResult(False, status, targets=result.targets), reason)
        params = {name: value.copy() for name, value in result.params.items()}
        smoothed = not reason and cfg.smoothing < 1
        if smoothed and not self.refit_on_jump:  # a jump was not re-fitted: it only restarts the smoothing
            smoothed = not is_jump(previous.params, params, cfg)
        if smoothed:
            params = smooth_params(previous.params, params, cfg.smoothing)
        result = result_with_params(self.warm, result, params)  # the one full-mesh skinning of this frame
        result.smoothed = smoothed
        return FrameFit(result, reason)


# -- placer: what the pipeline / node use ------------------------------------------------------------------
class CameraBodyPlacer:
    """Places an SMPL-X body in the camera frame from an RGB image and K; keeps stream state.

    Never raises for a missing optional asset: `place()` returns `placed=False` with the reason (no SMPL-X
    files, no mediapipe, nobody detected), so contacts are still reported on the canonical body. In a stream,
    frames are fitted by `StreamBodyFitter` (as the tracker's): a jump in the body only restarts the smoothing,
    and a warm fit is re-fitted cold when it reprojects worse than `config.refit_error`.
    """

    def __init__(
        self,
        layer: BodyLayer | None,
        config: BodyFitConfig | None = None,
        detector: Any = None,
        unavailable_reason: str = "",
        stream: bool = True,
    ) -> None:
        self.layer = layer
        self.config = config or BodyFitConfig()
        self.fitter = KeypointBodyFitter(layer, self.config) if layer is not None else None
        self._frames = StreamBodyFitter(self.fitter) if self.fitter is not None else None
        self._detector = detector
        self.unavailable_reason = unavailable_reason
        self.stream = stream
        self._previous: BodyFitResult | None = None

    @classmethod
    def from_body_model_dir(
        cls,
        body_model_dir: str | Path | None,
        gender: str = "neutral",
        config: BodyFitConfig | None = None,
        detector: Any = None,
        stream: bool = True,
    ) -> CameraBodyPlacer:
        """Load SMPL-X from the user's body model folder; without it the placer explains why it cannot place."""
        layer, problem = load_optional_body_layer(body_model_dir, gender, (config or BodyFitConfig()).num_betas)
        if layer is None:
            reason = f"body not placed: {problem}; contacts are reported on the canonical body"
            return cls(None, config, detector, reason, stream)
        return cls(layer, config, detector, "", stream)

    @property
    def available(self) -> bool:
        return self.fitter is not None

    def reset(self) -> None:
        self._previous = None

    def _keypoints(self, image_rgb: np.ndarray) -> HumanKeypoints | None:
        if self._detector is None:
            from ivlm_core.fitting.keypoints import MediaPipeKeypointDetector

            self._detector = MediaPipeKeypointDetector(static_image_mode=not self.stream)
        return self._detector(image_rgb)

    def place(
        self, image_rgb: np.ndarray | None, camera_k: np.ndarray, keypoints: HumanKeypoints | None = None
    ) -> BodyFitResult:
        """Fit the body of the most prominent person (keypoints are detected unless given)."""
        if self._frames is None:
            return BodyFitResult(False, self.unavailable_reason)
        if keypoints is None:
            if image_rgb is None:
                raise InvalidInputError("place() needs an image or precomputed keypoints")
            try:
                keypoints = self._keypoints(image_rgb)
            except IvlmError as err:
                return BodyFitResult(False, f"body not placed: {err}")
        if keypoints is None:
            self.reset()
            return BodyFitResult(False, "body not placed: no person detected in the image")
        result = self._frames.fit_frame(keypoints, camera_k, self._previous if self.stream else None).result
        if result.placed and self.stream:  # the next frame starts from a copy: callers may change theirs
            self._previous = replace(result, params={name: value.copy() for name, value in result.params.items()})
        return result


def result_with_params(
    fitter: KeypointBodyFitter, result: BodyFitResult, params: dict[str, np.ndarray]
) -> BodyFitResult:
    """`result` with other (e.g. smoothed) parameters: mesh, joints and reprojection error recomputed."""
    with torch.no_grad(), single_torch_thread():
        tensors = {name: torch.from_numpy(np.asarray(value, dtype=np.float32))[None] for name, value in params.items()}
        mesh = fitter.layer(tensors)
        points = fitter.model_points(tensors)[0]
    out = replace(result, params=params, vertices=mesh.vertices[0].numpy(), joints=mesh.joints[0].numpy())
    if result.targets is not None and result.camera_k is not None:
        k = torch.as_tensor(result.camera_k, dtype=torch.float32)
        out.fitted_2d = _project(points[torch.as_tensor(result.targets.model_points)], k).numpy()
        error = np.linalg.norm(out.fitted_2d - result.targets.points_2d, axis=1)
        weights = result.targets.weights
        out.reprojection_error_px = float((error * weights).sum() / max(weights.sum(), 1e-9))
        out.reprojection_error_rel = out.reprojection_error_px / result.targets.diagonal
    return out


def load_optional_body_layer(
    body_model_dir: str | Path | None, gender: str = "neutral", num_betas: int = 10
) -> tuple[BodyLayer | None, str]:
    """(layer, "") or (None, what is missing and how to fix it): for users that work on without a body."""
    if body_model_dir is None:
        return None, (
            "no SMPL-X body model folder configured (set body_model_dir to a folder holding "
            "smplx/SMPLX_NEUTRAL.npz from https://smpl-x.is.tue.mpg.de)"
        )
    try:
        return load_body_layer(body_model_dir, gender, num_betas), ""
    except IvlmError as err:
        return None, str(err)


def load_body_layer(body_model_dir: str | Path, gender: str = "neutral", num_betas: int = 10) -> BodyLayer:
    """SMPL-X via `ivlm_core.body.models.load_body_model` (MissingAssetError with the fix when absent)."""
    from ivlm_core.body.models import load_body_model

    model = load_body_model(body_model_dir, "smplx", gender, num_betas=num_betas)
    layer = BodyLayer(model)
    _use_relaxed_hands(layer, model)
    return layer


def _use_relaxed_hands(layer: BodyLayer, model: torch.nn.Module) -> None:
    """Start hands from the model file's relaxed mean (flat hands look wrong), when the file has it."""
    path = getattr(model, "model_file", None)
    if path is None:
        return
    try:
        from ivlm_core.body.models import load_model_arrays

        arrays = load_model_arrays(path)
    except (IvlmError, OSError, ValueError) as err:
        LOG.debug("no relaxed hand mean in %s: %s", path, err)
        return
    for side, key in (("left", "hands_meanl"), ("right", "hands_meanr")):
        if key in arrays and np.asarray(arrays[key]).size == 45:
            setattr(layer, f"{side}_hand_rest", torch.as_tensor(np.asarray(arrays[key]), dtype=layer.dtype).reshape(45))
