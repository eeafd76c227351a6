"""Place a known object mesh next to a fixed human by its predicted contacts and its image mask.

Port of the reference ``optim/`` fit (spec 5) with its bugs fixed (spec 8.2): Adam over the object's 6D
rotation, translation (and optionally scale) minimising
  w_mask * (1 - IoU(soft silhouette, mask)) on the part of the image the body does not hide (z-buffer), with a
  TRUE union (the reference divides by sum(S + M)), the silhouette's outline moved out or in by the best of
  up to +-mask_shift_px (a predicted mask too wide or too narrow by a few pixels, thin parts erased
  included), at a small cost per pixel,
  w_centroid * |silhouette centroid - mask centre|^2 (pixels),
  w_contact * a robust two-sided contact distance (ivlm; the reference's all-pairs mean distance pulls the
  object towards the middle of every contact, the other hand included): each object contact to its nearest
  human contact and each human contact to its nearest object contact, less contact_tolerance_m (a label
  means "within about a centimetre"), the body's side saturating at contact_cap_m (a body contact far from
  the object is mostly a false one), p- and density-weighted, averaged over the closest contact_keep_fraction
  (a trimmed mean),
plus two ivlm terms the reference lacks, both on a sample of the object's vertices measured against dense samples
of the body surface near its contacts:
  w_penetration * mean depth inside the body, which stops the contact term from pulling the object into the
  hand, and
  w_labels * the negative log-likelihood of the object's contact labels given each vertex's distance to the body
  (touched with probability sigmoid((label_distance_m - d) / label_softness_m), label_outlier_rate of labels
  anything): both halves of each label count, so a pose that presses unlabelled surface onto the body (which
  the contact term alone rewards: every labelled point a little nearer) loses to the true one.

Body contacts are first split into regions; only those projecting next to the object's mask are kept (a
model's false blob on the other hand is a whole region, which no robust kernel tells from the true one).

Without a start pose (the product's path) the fit is multi-hypothesis (``ivlm_core.fitting.hypotheses``):
rotations about the contact normals, along the object's and the mask's principal axes, and the 24 rotations
of the cube, each at the mask centre and contact depth (and refined from there by contact ICP) and each with
its contact patch's centroid on the body's (an object seen end-on is tens of centimetres from the mask centre's
depth), and on each body contact region's alone when there are several, are scored by the full loss; the
best distinct ones get a short fit together in one batch (Adam is per element, so a batch gives exactly what
one fit per hypothesis would) on a coarse silhouette grid (hypothesis_resolution; after half of it only the
warmup_keep best distinct ones go on), the best few are continued on the fine grid (silhouette_resolution):
Adam steps, which find the basin, then a few Levenberg-Marquardt iterations (``newton_*``), which land in it
where Adam creeps, and the best is kept. The runner-up that is a different
pose modulo the object's symmetry gives the confidence (its loss gap); a near-tie is reported as an ambiguity.

The smooth mask term above is what gradients need, but its approximations (coarse grid, blurred outline, a
depth margin before the body hides the object) misjudge masks that are too wide or too narrow behind the
body. So the pose is chosen last by the exact mask term (``ExactMaskScore``) plus the image-free terms: the
best distinct poses among the short fits, the finalists and their paths, each polished by a seeded random
search (``exact_polish_*``; report: exact_total, exact_mask_loss, exact_mask_shift_px, exact_evaluations);
the runner-up and its loss gap are then judged by that exact total too (the best different pose among the
polished starts and the poses they were chosen from), the criterion that chose the pose.
Before it, the finalists and the best other short fits take a few Levenberg-Marquardt iterations on the
image-free terms plus the mask term measured along the object's visible outline (``OutlineTarget``,
``outline_*``): smooth like the blurred term, pixel-accurate like the exact one; their poses join the pool.
A held object keeps its pose in the hand. ``history`` (``FrameEvidence`` of the object's last fitted frames,
``pool_frames`` of them) adds those frames' exact totals to the polish's energy, each at the pose moved by the
hand's rigid motion since (the body's vertices around the contacts, matched by index), and their fitted poses
to its starts: frames with independent mask and contact errors pin the pose down better than one
(report: pooled_frames; pool_skipped_* say why a frame was not pooled).

report["mask_half_width_px"] says how thick the mask is: a few pixels of outline error take or add most of a
mask only a few times that thick, and the rotation is then weakly observed.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
import yaml
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.fitting.exact_mask import ExactMaskScore
from ivlm_core.fitting.hypotheses import start_rotations
from ivlm_core.fitting.icp import (
    contact_anchored_translations,
    contact_icp_batch,
    contact_region_depth,
    mask_centre_translation,
    sample_contact_surface,
    umeyama_rigid,
)
from ivlm_core.fitting.nearest import TrackedNearest
from ivlm_core.fitting.outline_align import OutlineTarget
from ivlm_core.fitting.rotation import (
    matrix_to_quaternion_xyzw,
    matrix_to_rotation_6d,
    rotation_6d_to_matrix,
    rotation_vector_to_matrix,
)
from ivlm_core.fitting.silhouette import (
    PHI_CUT,
    EdgeTable,
    SilhouetteGrid,
    decimate_by_clustering,
    encloses_volume,
    soft_silhouette,
)
from ivlm_core.fitting.symmetry import NO_SYMMETRY, Symmetry
from ivlm_core.fitting.zbuffer import render_depth
from ivlm_core.geometry.raster import checked_vertices

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "fitting.yaml"


class ObjectFitFailure(InvalidInputError):
    """The object cannot be placed from these inputs; the message says why (mask too small, no contacts...)."""


@dataclass
class FitConfig:
    """Weights, learning rates and budgets; ``config/fitting.yaml`` holds the same defaults, documented."""

    iterations: int = 24
    lr_rotation: float = 5e-2
    lr_translation: float = 1e-2
    lr_scale: float = 1e-2
    optimise_scale: bool = False
    weight_mask: float = 5.0
    weight_centroid: float = 1e-4
    weight_contact: float = 10.0
    weight_penetration: float = 100.0
    weight_labels: float = 6.0
    label_distance_m: float = 0.02
    label_softness_m: float = 0.004
    label_outlier_rate: float = 0.1
    object_test_points: int = 512
    body_surface_samples: int = 5000
    contact_keep_fraction: float = 1.0
    contact_density_radius: float = 0.15
    contact_tolerance_m: float = 0.01
    contact_cap_m: float = 0.05
    max_start_regions: int = 3
    mask_boundary_band_px: int = 0
    mask_shift_px: int = 8
    mask_shift_step_px: int = 1
    mask_shift_cost: float = 0.004
    mask_shift_window: int = 1
    object_contact_threshold: float = 0.3
    human_contact_threshold: float = 0.5
    human_contact_mask_margin: float = 0.5
    contact_cluster_m: float = 0.05
    contact_cluster_slack: float = 0.25
    contact_cluster_min_mass: float = 0.15
    min_mask_pixels: int = 30
    centroid_target: str = "mask_centroid"
    icp_iterations: int = 10
    icp_normal_weight: float = 0.05
    icp_max_normal_angle_deg: float = 60.0
    icp_robust_scale_m: float = 0.03
    silhouette_resolution: int = 64
    hypothesis_resolution: int = 32
    hypothesis_sample_fraction: float = 0.5
    silhouette_margin: float = 0.5
    silhouette_sigma: float = 0.5
    silhouette_sigma_start: float = 0.5
    mask_target: str = "area"
    start_candidates: int = 2
    start_candidates_without_pose: int = 24
    warmup_iterations: int = 24
    warmup_keep: int = 8
    finalists: int = 2
    distinct_rotation_deg: float = 10.0
    distinct_translation_m: float = 0.02
    ambiguity_loss_gap: float = 0.05
    max_silhouette_faces: int = 4000
    max_object_contact_points: int = 128
    max_human_contact_points: int = 256
    occlusion_update_every: int = 20
    occlusion_margin_m: float = 0.015
    early_stop_patience: int = 30
    early_stop_tolerance: float = 1e-4
    newton_iterations: int = 6
    newton_probe_deg: float = 0.5
    newton_probe_m: float = 0.001
    newton_damping: float = 0.1
    newton_max_step: float = 4.0
    newton_min_step: float = 0.05
    newton_hessian_every: int = 2
    outline_iterations: int = 6
    outline_starts: int = 4
    outline_robust_px: float = 0.5
    exact_polish_rounds: int = 4
    exact_polish_starts: int = 2
    exact_polish_samples: int = 12
    exact_polish_turn_deg: float = 6.0
    exact_polish_move_m: float = 0.006
    pool_frames: int = 1
    pool_hand_radius_m: float = 0.06
    pool_hand_residual_m: float = 0.01
    pool_max_excess: float = 0.15
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FitConfig:
        data = dict(data or {})
        for name, value in dict(data.pop("weights", {}) or {}).items():
            data[f"weight_{name}"] = value
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidInputError(f"unknown fitting config keys {unknown}; known: {sorted(known)}")
        defaults = cls()
        values = {}
        for name, value in data.items():
            kind = type(getattr(defaults, name))
            try:
                if kind is bool and not isinstance(value, bool):  # bool("false") is True
                    raise TypeError(name)
                values[name] = kind(value)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"fitting config {name}: expected {kind.__name__}, got {value!r}") from exc
        cfg = cls(**values)
        if cfg.mask_target not in ("area", "blurred"):
            raise InvalidInputError(f"mask_target: area|blurred, not {cfg.mask_target}")
        if cfg.centroid_target not in ("mask_centroid", "bbox_center"):
            raise InvalidInputError(f"centroid_target: mask_centroid|bbox_center, not {cfg.centroid_target}")
        if cfg.iterations < 0 or cfg.silhouette_resolution < 4 or cfg.silhouette_sigma <= 0:
            raise InvalidInputError("fitting config: iterations >= 0, silhouette_resolution >= 4, sigma > 0")
        if min(cfg.start_candidates, cfg.start_candidates_without_pose, cfg.finalists) < 1:
            raise InvalidInputError("fitting config: start_candidates, start_candidates_without_pose, finalists >= 1")
        if cfg.exact_polish_rounds < 0 or min(cfg.exact_polish_starts, cfg.exact_polish_samples) < 1 or min(
            cfg.exact_polish_turn_deg, cfg.exact_polish_move_m
        ) < 0:
            raise InvalidInputError("fitting config: exact_polish_rounds >= 0 (0 = off), exact_polish_starts and "
                                    "exact_polish_samples >= 1, exact_polish_turn_deg and exact_polish_move_m >= 0")
        if cfg.outline_iterations < 0 or cfg.outline_starts < 1 or not cfg.outline_robust_px > 0:
            raise InvalidInputError("fitting config: outline_iterations >= 0 (0 = off), outline_starts >= 1 and "
                                    f"outline_robust_px > 0, not {cfg.outline_iterations}, {cfg.outline_starts} "
                                    f"and {cfg.outline_robust_px}")
        if not cfg.contact_cap_m >= 0:
            raise InvalidInputError(f"fitting config: contact_cap_m >= 0 metres (0 = no cap), not {cfg.contact_cap_m}")
        if cfg.warmup_keep < 0:
            raise InvalidInputError(f"fitting config: warmup_keep >= 0 (0 = every hypothesis), not {cfg.warmup_keep}")
        if cfg.pool_frames < 0 or not min(cfg.pool_hand_radius_m, cfg.pool_hand_residual_m, cfg.pool_max_excess) > 0:
            raise InvalidInputError("fitting config: pool_frames >= 0 (0 = off), pool_hand_radius_m, "
                                    "pool_hand_residual_m and pool_max_excess > 0")
        if cfg.newton_iterations < 0 or cfg.newton_hessian_every < 1 or not min(
            cfg.newton_probe_deg, cfg.newton_probe_m, cfg.newton_damping, cfg.newton_max_step
        ) > 0 or not cfg.newton_min_step >= 0:
            raise InvalidInputError("fitting config: newton_iterations >= 0 (0 = off), newton_hessian_every >= 1, "
                                    "newton_probe_deg, newton_probe_m, newton_damping, newton_max_step > 0, "
                                    "newton_min_step >= 0")
        if cfg.max_start_regions < 1:
            raise InvalidInputError(f"fitting config: max_start_regions >= 1, not {cfg.max_start_regions}")
        if min(cfg.object_test_points, cfg.body_surface_samples) < 1:
            raise InvalidInputError("fitting config: object_test_points, body_surface_samples >= 1 (the penetration "
                                    "and contact-label terms need them; weight them 0 to turn those off)")
        return cfg

    @classmethod
    def load_default(cls) -> FitConfig:
        """config/fitting.yaml when the source tree is there, else the (identical) built-in defaults."""
        return cls.load(DEFAULT_CONFIG_PATH) if DEFAULT_CONFIG_PATH.is_file() else cls()

    @classmethod
    def load(cls, path: str | Path | None = None) -> FitConfig:
        path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
        if not path.is_file():
            raise MissingAssetError("fitting config", path, "Pass an existing YAML, see config/fitting.yaml.")
        return cls.from_dict(yaml.safe_load(path.read_text()))


@dataclass
class ObjectFitResult:
    """Object pose in the camera frame: x_cam = scale * rotation @ x_mesh + translation."""

    rotation: np.ndarray  # (3,3)
    translation: np.ndarray  # (3,) metres; also the pose position
    scale: float
    vertices: np.ndarray  # (M,3) float32 posed mesh, camera frame, original vertex order
    report: dict[str, float] = field(default_factory=dict)
    status: str = "ok"  # "ok", or "ok; ambiguous: ..." when a different pose fits almost as well
    runner_up: tuple[np.ndarray, np.ndarray] | None = None  # the best different pose (rotation, translation)
    evidence: FrameEvidence | None = None  # this frame's observations, for the next frames' history (None:
    # the exact polish is off, which the pooling needs)

    @property
    def quaternion_xyzw(self) -> np.ndarray:
        return matrix_to_quaternion_xyzw(self.rotation)

    def pose_dict(self) -> dict[str, dict[str, float]]:
        """geometry_msgs/Pose field layout (position + orientation quaternion x, y, z, w)."""
        q = self.quaternion_xyzw
        t = self.translation
        return {
            "position": {"x": float(t[0]), "y": float(t[1]), "z": float(t[2])},
            "orientation": {"x": float(q[0]), "y": float(q[1]), "z": float(q[2]), "w": float(q[3])},
        }

    def placement_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the pipeline's ObjectPlacement dataclass."""
        return {
            "placed": True,
            "status": self.status,
            "rotation": self.rotation.astype(np.float64),
            "translation": self.translation.astype(np.float64),
            "scale": float(self.scale),
            "vertices": self.vertices,
            "report": dict(self.report),
            "history": () if self.evidence is None else (self.evidence,),
        }


@dataclass
class _Scene:
    """Everything the loss needs, prepared once per fit."""

    local: torch.Tensor  # (M,3) object vertices around their centre
    sil_vertices: torch.Tensor  # silhouette mesh (merged/decimated), same frame
    sil_faces: torch.Tensor
    sil_edges: EdgeTable
    cull: bool
    grid: SilhouetteGrid
    mask: torch.Tensor  # (h,w) the object mask on the grid (block-averaged, or blurred like the silhouette)
    mask_shifts: torch.Tensor  # (K,) pixels the silhouette's outline is moved by (> 0: out); one is 0
    mask_weight: torch.Tensor  # (h,w) 0 in the don't-care band along the mask outline, else 1 (averaged)
    centroid_target: torch.Tensor  # (2,) image (u, v)
    camera_k: torch.Tensor
    obj_contact_local: torch.Tensor  # (Co,3)
    obj_contact_p: torch.Tensor  # (Co,)
    human_contact: torch.Tensor  # (Ch,3)
    human_contact_p: torch.Tensor  # (Ch,)
    human_tree: cKDTree  # over human_contact
    obj_contact_tree: cKDTree  # over obj_contact_local
    test_local: torch.Tensor  # (L,3) object vertices tested against the body (penetration, contact labels)
    test_p: torch.Tensor  # (L,) their contact probabilities
    test_weight: torch.Tensor  # (L,) each one's share of the mesh's vertices (sums to 1)
    surface: _BodySurface  # dense samples of the body surface
    human_depth: torch.Tensor | None  # (h,w) on the grid, inf where no body
    occlusion_margin: float


@dataclass
class _BodySurface:
    """Dense samples of the body's surface with their face normals: the distance of a point to the body
    surface (a body vertex can be centimetres from the surface point nearest it)."""

    points: torch.Tensor  # (K,3)
    normals: torch.Tensor  # (K,3)
    tree: cKDTree

    @classmethod
    def sample(
        cls, vertices: np.ndarray, faces: np.ndarray, count: int, seed: int,
        near: np.ndarray | None = None, radius: float = np.inf,
    ) -> _BodySurface:
        """``count`` samples of the faces with a corner within ``radius`` of a point in ``near`` (the whole
        body when near is None or no face is that close): the object can only touch the body there, so the
        samples are spent where they are needed."""
        mesh = trimesh.Trimesh(vertices, faces, process=False, validate=False)
        if near is not None and len(near) and np.isfinite(radius):
            close = cKDTree(near).query(vertices, distance_upper_bound=radius)[0] < radius
            kept = close[faces].any(axis=1)
            if kept.any():
                mesh = trimesh.Trimesh(vertices, faces[kept], process=False, validate=False)
        points, face_index = trimesh.sample.sample_surface(mesh, max(1, count), seed=seed)
        normals = np.asarray(mesh.face_normals)[face_index]
        return cls(torch.as_tensor(points, dtype=torch.float32), torch.as_tensor(normals, dtype=torch.float32),
                   cKDTree(points))

    def nearest(self, points: torch.Tensor, reach: float, tracked: TrackedNearest | None = None) -> torch.Tensor:
        """(...,) index of the sample nearest each point (...,3), -1 beyond ``reach``: the tree search stops
        there, which makes the many points far from the body cheap. tracked: the same answers, from the
        last step's where the points moved little (:class:`TrackedNearest` over this tree and reach). No
        gradient."""
        flat = points.detach().reshape(-1, 3).double().numpy()
        if tracked is not None:
            if tracked.reach != reach:  # its answers stop at its own reach
                raise ValueError(f"the tracked search stops at {tracked.reach} m, not the {reach} m asked for")
            return torch.as_tensor(tracked.query(flat), dtype=torch.int64).reshape(points.shape[:-1])
        _, index = self.tree.query(flat, distance_upper_bound=reach)
        index = torch.as_tensor(index, dtype=torch.int64).reshape(points.shape[:-1])
        return torch.where(index < len(self.points), index, -1)

    def signed_distance(self, points: torch.Tensor, nearest: torch.Tensor, reach: float) -> torch.Tensor:
        """(...,) distance of points (...,3) to their samples ``nearest`` (``nearest()``), < 0 behind the sample's
        face (inside); ``reach`` (no gradient) where the index is -1."""
        found = nearest >= 0
        index = nearest.clamp(min=0)
        offset = points - self.points[index]
        distance = (offset.pow(2).sum(-1) + 1e-12).sqrt()
        signed = torch.where((offset * self.normals[index]).sum(-1) < 0, -distance, distance)
        return torch.where(found, signed, torch.full_like(signed, reach))


@dataclass
class _Batch:
    """Poses of several hypotheses (centred object frame): x_cam = scale * R (x - centre) + translation."""

    rotation: torch.Tensor  # (B,3,3)
    translation: torch.Tensor  # (B,3)
    scale: torch.Tensor  # (B,)
    loss: torch.Tensor  # (B,) full loss at these poses
    labels: list[str]

    def take(self, index: list[int] | np.ndarray) -> _Batch:
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return _Batch(self.rotation[idx], self.translation[idx], self.scale[idx], self.loss[idx],
                      [self.labels[i] for i in np.asarray(index, dtype=np.int64)])

    def concat(self, other: _Batch) -> _Batch:
        return _Batch(torch.cat([self.rotation, other.rotation]), torch.cat([self.translation, other.translation]),
                      torch.cat([self.scale, other.scale]), torch.cat([self.loss, other.loss]),
                      self.labels + other.labels)


@dataclass(frozen=True)
class FrameEvidence:
    """One fitted frame's observations of its object, kept for the next frames of the same held object: the
    exact mask score and the image-free terms of that frame, the body they were seen with, and where the fit
    placed the object. Nothing in it is changed after the fit (frames share it)."""

    object_vertices: np.ndarray  # (V,3) mesh frame: the mesh these observations are of
    body_vertices: np.ndarray  # (N,3) that frame's body, camera frame
    hand: np.ndarray  # (A,) indices of the body vertices within pool_hand_radius_m of its usable contacts
    rotation: np.ndarray  # (3,3) that frame's fit, centred object frame -> camera
    translation: np.ndarray  # (3,)
    scene: _Scene  # the image-free terms (the hypotheses' sparser samples, as the polish uses)
    exact: ExactMaskScore
    own_total: float  # that frame's exact total (its observations alone) at its fit


@dataclass
class _PooledFrame:
    """An earlier frame's evidence and the hand's rigid motion from this frame's camera coordinates to its."""

    scene: _Scene
    exact: ExactMaskScore
    rotation: torch.Tensor  # (3,3)
    translation: torch.Tensor  # (3,)
    own_total: float


def _hand_vertices(cfg: FitConfig, hum_v: np.ndarray, p_hum: np.ndarray) -> np.ndarray:
    """Indices of the body vertices within pool_hand_radius_m of the usable contacts: the part of the body the
    held object moves with."""
    touched = hum_v[p_hum > cfg.human_contact_threshold]
    if not len(touched):
        return np.zeros(0, dtype=np.int64)
    near = cKDTree(touched).query(hum_v, distance_upper_bound=cfg.pool_hand_radius_m)[0]
    return np.nonzero(near < cfg.pool_hand_radius_m)[0]


def _pooled_frames(
    cfg: FitConfig, history: Sequence[FrameEvidence], obj_v: np.ndarray, hum_v: np.ndarray, hand: np.ndarray,
) -> tuple[list[_PooledFrame], list[tuple[np.ndarray, np.ndarray]], dict[str, float]]:
    """The frames of ``history`` (newest first, pool_frames of them) that can be pooled, the hand's motion to
    each, and their fitted poses moved into this frame; report counts of the frames skipped and why: another
    mesh or body model, too few hand vertices, or a hand that did not move rigidly (its vertices off by more
    than pool_hand_residual_m after the best rigid motion: the body fit changed there, or another hand holds)."""
    frames: list[_PooledFrame] = []
    poses: list[tuple[np.ndarray, np.ndarray]] = []
    skipped = {"pool_skipped_mesh": 0.0, "pool_skipped_body": 0.0, "pool_skipped_hand": 0.0}
    for evidence in list(history)[: cfg.pool_frames]:
        if evidence.object_vertices.shape != obj_v.shape or not np.allclose(evidence.object_vertices, obj_v):
            skipped["pool_skipped_mesh"] += 1
            continue
        if evidence.body_vertices.shape != hum_v.shape:
            skipped["pool_skipped_body"] += 1
            continue
        region = np.intersect1d(hand, evidence.hand)
        if len(region) < 3:
            skipped["pool_skipped_hand"] += 1
            continue
        rot, trans = umeyama_rigid(hum_v[region], evidence.body_vertices[region])
        residual = np.sqrt(np.mean(np.sum((hum_v[region] @ rot.T + trans - evidence.body_vertices[region]) ** 2, 1)))
        if not residual <= cfg.pool_hand_residual_m:
            skipped["pool_skipped_hand"] += 1
            continue
        frames.append(_PooledFrame(evidence.scene, evidence.exact, torch.as_tensor(rot, dtype=torch.float32),
                                   torch.as_tensor(trans, dtype=torch.float32), evidence.own_total))
        # its fit x_then = R_then x + t_then, and x_then = G x_now: x_now = G^T (R_then x + t_then - g)
        poses.append((rot.T @ evidence.rotation, rot.T @ (evidence.translation - trans)))
    report = {"pooled_frames": float(len(frames)), "pool_rejected": 0.0, **skipped}
    return frames, poses, report


def fit_object(
    object_vertices: np.ndarray,
    object_faces: np.ndarray,
    object_contact: np.ndarray,
    human_vertices: np.ndarray,
    human_faces: np.ndarray,
    human_contact: np.ndarray,
    object_mask: np.ndarray,
    camera_k: np.ndarray,
    config: FitConfig | None = None,
    init_rotation: np.ndarray | None = None,
    init_translation: np.ndarray | None = None,
    use_occlusion: bool = True,
    symmetry: Symmetry | None = None,
    previous_pose: tuple[np.ndarray, np.ndarray] | None = None,
    history: Sequence[FrameEvidence] = (),
) -> ObjectFitResult:
    """Fit the object pose (mesh frame -> camera frame) against a fixed, camera-frame human mesh.

    object_contact / human_contact: per-vertex probabilities in the meshes' vertex order. object_mask: (H,W)
    bool in the image of intrinsics camera_k. init_rotation/init_translation: an optional starting pose of the
    mesh frame; without a translation the object starts at the mask centre at the human contact depth and with
    its contact centroid on the body's, and
    without a rotation the multi-hypothesis start is used. symmetry: the object's (library) symmetry, used to
    tell a rival pose from a twin; None = no symmetry. previous_pose: (rotation, translation) of the last
    fit of this object in a stream (mesh frame -> camera frame), or None: it joins the start poses and the
    finalists, the pose nearest it is polished, and when two different poses fit almost equally well (an
    ambiguity, judged by the exact polish's total, else the finalists' loss) the one nearer it is kept, so a
    stream does not flip between poses its frames cannot tell apart. history: the evidence of this
    object's last fitted frames (``ObjectFitResult.evidence``, newest first): the first pool_frames whose hand
    moved rigidly are pooled into the exact polish (see the module docstring); the result's own evidence is in
    ``evidence``.
    Raises ObjectFitFailure saying why when the inputs cannot place the object (mask too small, no contacts
    above threshold, no human contact near the object in the image).
    report["iterations"] counts the batched Adam steps (short fit of all hypotheses + the finalists' fit),
    report["newton_iterations"] the finalists' Levenberg-Marquardt iterations (at most).
    """
    start_time = time.perf_counter()
    cfg = config or FitConfig()
    symmetry = symmetry or NO_SYMMETRY
    obj_v, obj_f, p_obj = _check_mesh("object", object_vertices, object_faces, object_contact)
    hum_v, hum_f, p_hum = _check_mesh("human", human_vertices, human_faces, human_contact)
    mask = np.asarray(object_mask).astype(bool)
    k = np.asarray(camera_k, dtype=np.float64)
    if k.shape != (3, 3) or mask.ndim != 2:
        raise InvalidInputError(f"camera_k must be 3x3 and object_mask 2-D, got {k.shape} and {mask.shape}")
    if not mask.any():
        raise InvalidInputError("object mask is empty: cannot fit the object pose")
    p_hum = _usable_contacts(cfg, obj_v, p_obj, hum_v, p_hum, mask, k)

    centre = obj_v.mean(axis=0)
    # hypotheses are compared on a coarse silhouette grid (cheap), the finalists refined on the fine one
    depth = render_depth([(hum_v, hum_f)], k, mask.shape).depth if use_occlusion else None
    surface = _body_surface(cfg, obj_v, hum_v, hum_f, p_hum)
    scene = _prepare(cfg, obj_v - centre, obj_f, p_obj, hum_v, hum_f, p_hum, mask, k, use_occlusion,
                     body_depth=depth, surface=surface)
    # ... with fewer contact and surface samples too: it only ranks the hypotheses
    sparse = replace(cfg, **{name: max(8, round(cfg.hypothesis_sample_fraction * getattr(cfg, name))) for name in (
        "max_object_contact_points", "max_human_contact_points", "object_test_points")})
    coarse = _prepare(sparse, obj_v - centre, obj_f, p_obj, hum_v, hum_f, p_hum, mask, k, use_occlusion,
                      resolution=min(cfg.hypothesis_resolution, cfg.silhouette_resolution), body_depth=depth,
                      surface=surface)
    candidates, icp_report = _start_poses(
        cfg, obj_v, obj_f, centre, p_obj, hum_v, hum_f, p_hum, mask, k, init_rotation, init_translation
    )
    previous = None
    if previous_pose is not None:  # as a centred-frame pose: x_cam = R (x - centre) + (R centre + t)
        prev_rot = np.asarray(previous_pose[0], dtype=np.float64)
        prev_trans = np.asarray(previous_pose[1], dtype=np.float64)
        if prev_rot.shape != (3, 3) or prev_trans.shape != (3,) or not (
            np.isfinite(prev_rot).all() and np.isfinite(prev_trans).all()
        ):
            raise InvalidInputError("previous_pose must be a finite (3x3 rotation, 3-vector translation)")
        previous = (prev_rot, prev_rot @ centre + prev_trans)
        candidates.append((*previous, "previous"))
    sym_centre = np.asarray(symmetry.centre) - centre  # the point every twin turn keeps in place

    def distinct(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
        rot_deg, trans_m = _pose_distance(symmetry, sym_centre, a, b)
        return rot_deg > cfg.distinct_rotation_deg or trans_m > cfg.distinct_translation_m

    def turned(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
        """Different orientations: the exact polish's starts must differ in rotation, since its search moves
        the object freely but turns it only a few degrees; two starts of one orientation a few cm apart left
        the basin of a slim handle's true pose unpolished (docs/fit_recovery.md, ninth session)."""
        return _pose_distance(symmetry, sym_centre, a, b)[0] > cfg.distinct_rotation_deg

    # score every start pose by the full loss; the best distinct ones are refined together
    scored = _score(coarse, cfg, candidates)
    keep = cfg.start_candidates if init_rotation is not None else cfg.start_candidates_without_pose
    chosen = _with_previous(scored, _best_distinct(scored, keep, distinct, fill=True), distinct)
    # the many short fits search the body surface again only with the occlusion; the finalists every step
    short = _refine(coarse, cfg, scored.take(chosen), min(cfg.warmup_iterations, cfg.iterations),
                    surface_search_every=cfg.occlusion_update_every, keep=cfg.warmup_keep, distinct=distinct)
    short = _rescore(scene, cfg, short)
    finalists = _with_previous(short, _best_distinct(short, cfg.finalists, distinct, fill=True), distinct)
    trail: list[tuple[torch.Tensor, torch.Tensor]] = []
    final = _refine(scene, cfg, short.take(finalists), cfg.iterations, trail=trail)
    if cfg.newton_iterations > 0:
        final = _refine_newton(scene, cfg, final, cfg.newton_iterations, trail=trail)
    order = np.argsort(final.loss.numpy(), kind="stable")
    best = int(order[0])
    polishing = cfg.exact_polish_rounds > 0 and not cfg.optimise_scale
    kept_previous = False

    def nearer_previous(pose: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
        return _pose_distance(symmetry, sym_centre, pose, previous)

    if previous is not None and not polishing:
        # a near-tie between finalists that differ (modulo symmetry): keep the one nearer the last fit (with the
        # exact polish, that judges the tie by the exact total instead)
        tied = [int(i) for i in order if float(final.loss[int(i)] - final.loss[best]) < cfg.ambiguity_loss_gap
                and (int(i) == best or distinct(_pose(final, best), _pose(final, int(i))))]
        nearest = min(tied, key=lambda i: nearer_previous(_pose(final, i)))
        kept_previous = nearest != best
        best = nearest
    rot_t, trans_t, scale_t = final.rotation[best], final.translation[best], final.scale[best]
    polish_report: dict[str, float] = {}
    # the runner-up (rotation, centred translation, scale, loss gap), judged by the loss that chose the pose
    rival: tuple[np.ndarray, np.ndarray, float, float] | None = None
    evidence = None
    if polishing:
        body_depth = depth if depth is not None else np.full(mask.shape, np.inf)
        max_shift = int(scene.mask_shifts.abs().max())
        exact = ExactMaskScore(obj_v, obj_f, body_depth, mask, k, max_shift, cfg.mask_shift_cost)
        hand = _hand_vertices(cfg, hum_v, p_hum)
        pooled, pooled_poses, pool_report = _pooled_frames(cfg, history, obj_v, hum_v, hand)
        # the short fits, the finalists, the finalists' paths (the smooth term may lead away), the outline
        # refinement's steps; and below the pooled frames' fits
        if cfg.outline_iterations > 0:
            # the finalists, then the best other short fits, on the outline's misfit instead of the smooth
            # mask term, on the silhouette's mesh: merged (seams do not split the outline), of bounded size
            outline = OutlineTarget.build(scene.sil_vertices.double().numpy(), scene.sil_faces.numpy(), mask,
                                          body_depth, k, scene.cull, max_shift)
            others = [i for i in _best_distinct(short, cfg.outline_starts, distinct, fill=False)
                      if all(distinct(_pose(short, i), _pose(final, j)) for j in range(len(final.labels)))]
            starts = final.concat(short.take(others))
            _refine_outline(coarse, cfg, outline, starts.take(np.arange(min(cfg.outline_starts,
                                                                            len(starts.labels)))), trail)
        pool_rot = torch.cat([short.rotation, final.rotation, *[r for r, _ in trail]])
        pool_trans = torch.cat([short.translation, final.translation, *[t for _, t in trail]])
        then = [torch.as_tensor(np.stack(p), dtype=torch.float32) for p in zip(*pooled_poses)]
        pivot = obj_v[p_obj > cfg.object_contact_threshold].mean(0) - centre
        tie_break = nearer_previous if previous is not None else None
        # the image-free terms on the hypotheses' sparser samples: they rank poses as well, for half the cost
        found = _exact_polish(coarse, cfg, exact, centre, torch.cat([pool_rot, *then[:1]]),
                              torch.cat([pool_trans, *then[1:]]), pivot, turned, distinct, pooled,
                              own_poses=len(pool_rot), nearer_previous=tie_break)
        excess = found.excess
        pool_report["pool_excess_max"] = max(excess, default=float("nan"))
        if excess and max(excess) > cfg.pool_max_excess:
            # a frame fits the pooled pose much worse than its own: the object moved in the hand (a new grasp)
            # or a frame's fit was wrong; this frame alone decides
            found = _exact_polish(coarse, cfg, exact, centre, pool_rot, pool_trans, pivot, turned, distinct,
                                  nearer_previous=tie_break)
            pool_report.update(pooled_frames=0.0, pool_rejected=float(len(pooled)))
        rot_t, trans_t, polish_report = found.rotation, found.translation, found.report
        polish_report.update(pool_report)
        # the pose was chosen by the exact total (or by the stream's tie-break among its near-ties), and so is
        # its runner-up
        kept_previous = found.kept_previous
        if found.rival is not None:
            rival = (*found.rival[:2], 1.0, found.rival[2] - found.report["exact_total"])
        evidence = FrameEvidence(obj_v, hum_v, hand, rot_t.double().numpy(), trans_t.double().numpy(), coarse,
                                 exact, float(polish_report.get("exact_total_frame", polish_report["exact_total"])))
    best_pose = (rot_t.double().numpy(), trans_t.double().numpy())
    if rival is None:  # the best DIFFERENT pose (modulo symmetry) among the finalists, else the short fits
        found_rival = next(((final, int(i)) for i in order if int(i) != best
                            and distinct(best_pose, _pose(final, int(i)))), None)
        if found_rival is None:
            found_rival = next(((short, int(i)) for i in np.argsort(short.loss.numpy(), kind="stable")
                                if distinct(best_pose, _pose(short, int(i)))), None)
        if found_rival is not None:
            batch, i = found_rival
            rival = (*_pose(batch, i), float(batch.scale[i]), float(batch.loss[i] - final.loss[best]))

    with torch.no_grad():
        vis = _visibility(scene, rot_t[None], trans_t[None], scale_t[None])
        losses = _losses(scene, cfg, rot_t[None], trans_t[None], scale_t[None], vis)
    rotation = rot_t.double().numpy()
    s = float(scale_t)
    translation = trans_t.double().numpy() - s * rotation @ centre
    vertices = (s * obj_v @ rotation.T + translation).astype(np.float32)
    shift_index = losses.pop("mask_shift_index")
    kept_nearest = losses.pop("label_nearest")[0]
    report = {f"loss_{name}": float(value[0]) for name, value in losses.items()}
    report["mask_shift_px"] = float(scene.mask_shifts[shift_index[0]])  # > 0: the mask is wider than the object
    report["mask_iou_soft"] = 1.0 - report["loss_mask"]
    report.update(_regions_report(cfg, hum_v, p_hum, vertices, obj_f))
    report.update(_geometry_report(scene, vertices, p_obj, hum_v, p_hum, cfg, rot_t, trans_t, scale_t,
                                   kept_nearest))
    report.update(icp_report)
    report.update(polish_report)
    report["mask_half_width_px"] = mask_half_width_px(mask)
    status = "ok"
    gap = rot_gap = trans_gap = float("nan")
    runner_up = None
    if rival is not None:
        rival_rot, rival_centred, rival_scale, gap = rival
        rot_gap, trans_gap = _pose_distance(symmetry, sym_centre, best_pose, (rival_rot, rival_centred))
        runner_up = (rival_rot, rival_centred - rival_scale * rival_rot @ centre)
        if abs(gap) < cfg.ambiguity_loss_gap:  # < 0: the previous fit's pose was kept over a slightly better one
            status = (f"ok; ambiguous: a pose {rot_gap:.0f} deg / {100 * trans_gap:.1f} cm away (modulo the "
                      f"object's symmetry: {symmetry.describe()}) fits almost as well (loss gap {gap:.3f}, "
                      f"|gap| < {cfg.ambiguity_loss_gap})")
            if kept_previous:
                status += "; kept the pose nearer the previous fit"
    report.update(
        {
            "loss_gap": gap,
            "ambiguous": float(status != "ok"),
            "runner_up_rotation_deg": rot_gap,
            "runner_up_translation_m": trans_gap,
            "hypotheses": float(len(chosen)),
            "init_choice_icp": float(final.labels[best].endswith("+icp")),
            "kept_previous": float(kept_previous),
            "start_candidates": float(len(candidates)),
            "iterations": float(min(cfg.warmup_iterations, cfg.iterations) + cfg.iterations),
            "newton_iterations": float(cfg.newton_iterations),
            "fit_time_s": time.perf_counter() - start_time,
        }
    )
    return ObjectFitResult(rotation, translation, s, vertices, report, status, runner_up, evidence)


def warm_up() -> None:
    """Pay the fit's one-time start-up cost at load, not in the first fit: the first torch optimiser built in a
    process imports torch._dynamo (about 1.1 s on the dev CPU), which a node would otherwise add to its first
    object placement."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def mask_half_width_px(mask: np.ndarray) -> float:
    """Pixels from the mask's thickest point to its outline (the image border counts as outline). A predicted
    mask's outline is off by a few pixels; on a mask only that thick, such an error takes or adds most of the
    object and its shape says little about the rotation (fit_recovery: the noisy misses are there)."""
    rows, cols = np.nonzero(mask)
    if not len(rows):
        return 0.0
    crop = np.asarray(mask, dtype=bool)[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return float(ndimage.distance_transform_edt(np.pad(crop, 1)).max())


def _usable_contacts(
    cfg: FitConfig, obj_v: np.ndarray, p_obj: np.ndarray, hum_v: np.ndarray, p_hum: np.ndarray,
    mask: np.ndarray, k: np.ndarray,
) -> np.ndarray:
    """The human contact probabilities that can touch this object, or ObjectFitFailure saying why none can.

    A human contact whose image projection is far from the object mask cannot touch the object (a false
    positive on the other hand, say): contacts outside the mask's box grown by ``human_contact_mask_margin``
    times its size, plus the object's own size at that depth, are set to 0.
    """
    pixels = int(mask.sum())
    if pixels < cfg.min_mask_pixels:
        raise ObjectFitFailure(
            f"mask too small: {pixels} pixels (< min_mask_pixels {cfg.min_mask_pixels}); the object is too far, "
            "too hidden, or the box/mask prompt missed it"
        )
    thr_o, thr_h = cfg.object_contact_threshold, cfg.human_contact_threshold
    if int((p_obj > thr_o).sum()) < 3:
        raise ObjectFitFailure(
            f"no object contacts above threshold: {int((p_obj > thr_o).sum())} object vertices have p > {thr_o} "
            f"(highest {p_obj.max():.2f}); at least 3 are needed to know where the object is touched"
        )
    above = p_hum > thr_h
    if not above.any():
        raise ObjectFitFailure(
            f"no human contacts above threshold: no body vertex has p > {thr_h} (highest {p_hum.max():.2f})"
        )
    rows, cols = np.nonzero(mask)
    z = np.maximum(hum_v[:, 2], 1e-3)
    u = k[0, 0] * hum_v[:, 0] / z + k[0, 2]
    v = k[1, 1] * hum_v[:, 1] / z + k[1, 2]
    size = float(np.linalg.norm(np.ptp(obj_v, axis=0))) * k[0, 0] / z  # the object's size in pixels there
    grow_u = cfg.human_contact_mask_margin * (np.ptp(cols) + 1) + size
    grow_v = cfg.human_contact_mask_margin * (np.ptp(rows) + 1) + size
    near = (u > cols.min() - grow_u) & (u < cols.max() + grow_u) & (v > rows.min() - grow_v) & (v < rows.max() + grow_v)
    if not (above & near).any():
        raise ObjectFitFailure(
            f"no human contacts near the object: the {int(above.sum())} body vertices with p > {thr_h} all "
            "project far from the object mask"
        )
    p_near = np.where(near, p_hum, 0.0)
    return _touching_clusters(cfg, p_near, hum_v, mask, u, v, float(np.median(size[p_near > thr_h])))


def _touching_clusters(
    cfg: FitConfig, p_hum: np.ndarray, hum_v: np.ndarray, mask: np.ndarray, u: np.ndarray, v: np.ndarray,
    object_px: float,
) -> np.ndarray:
    """p_hum with only the contact regions that can be the object's: a model's false positives come as whole
    regions (the other hand, a blob on the torso), which a robust kernel cannot tell from the true one when
    they are as large. The body's contacts are split into regions (linked within contact_cluster_m); the
    object touches the region(s) whose image projection comes nearest its mask (within
    contact_cluster_slack times the object's size in pixels of the nearest); smaller regions under
    contact_cluster_min_mass of the largest kept one are stray labels and dropped too."""
    above = np.nonzero(p_hum > cfg.human_contact_threshold)[0]
    count, label = _regions(hum_v[above], cfg.contact_cluster_m)
    if count <= 1:
        return p_hum
    outside = ndimage.distance_transform_edt(~mask)
    rows = np.clip(np.round(v[above]).astype(int), 0, mask.shape[0] - 1)
    cols = np.clip(np.round(u[above]).astype(int), 0, mask.shape[1] - 1)
    inside_image = (u[above] >= 0) & (u[above] < mask.shape[1]) & (v[above] >= 0) & (v[above] < mask.shape[0])
    gap = np.where(inside_image, outside[rows, cols], np.inf)
    reach = np.array([gap[label == c].min() for c in range(count)])
    mass = np.array([p_hum[above][label == c].sum() for c in range(count)])
    keep = reach <= reach.min() + cfg.contact_cluster_slack * object_px
    keep &= mass >= cfg.contact_cluster_min_mass * mass[keep].max()
    out = p_hum.copy()
    out[above[~keep[label]]] = 0.0
    return out


def _regions(points: np.ndarray, link_m: float) -> tuple[int, np.ndarray]:
    """(count, (N,) region label) of points linked into regions by chains of neighbours within link_m; one
    region (label 0 everywhere) when link_m <= 0 (no region choice) or there are fewer than two points."""
    if link_m <= 0 or len(points) < 2:
        return min(1, len(points)), np.zeros(len(points), dtype=np.int64)
    pairs = cKDTree(points).query_pairs(link_m, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(points), len(points)))
    return connected_components(graph, directed=False)


def _pose(batch: _Batch, i: int) -> tuple[np.ndarray, np.ndarray]:
    return batch.rotation[i].double().numpy(), batch.translation[i].double().numpy()


def _pose_distance(
    symmetry: Symmetry, sym_centre: np.ndarray, a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[float, float]:
    """(rotation degrees, centre metres) between two centred-frame poses, modulo the symmetry."""
    rot = symmetry.rotation_error_deg(a[0], b[0])
    trans = float(np.linalg.norm(a[0] @ sym_centre + a[1] - b[0] @ sym_centre - b[1]))
    return rot, trans


def _best_distinct(batch: _Batch, count: int, distinct, fill: bool) -> list[int]:
    """Indices of up to ``count`` lowest-loss poses, skipping twins of already chosen ones (modulo symmetry),
    so the second pick is the best rival of the first. fill: top up with the best twins when too few distinct
    poses exist."""
    order = [int(i) for i in np.argsort(batch.loss.numpy(), kind="stable")]
    chosen: list[int] = []
    for i in order:
        if len(chosen) >= count:
            break
        pose = _pose(batch, i)
        if all(distinct(_pose(batch, j), pose) for j in chosen):
            chosen.append(i)
    if fill:
        chosen += [i for i in order if i not in chosen][: max(0, count - len(chosen))]
    return chosen


def _with_previous(batch: _Batch, chosen: list[int], distinct) -> list[int]:
    """chosen, with the previous fit's hypothesis (label "previous") in place of the last pick unless it or a
    twin of it is already there: the tie-break needs it refined beside the others (its loss still decides)."""
    if "previous" not in batch.labels:
        return chosen
    prev = batch.labels.index("previous")
    if prev in chosen or any(not distinct(_pose(batch, prev), _pose(batch, i)) for i in chosen):
        return chosen
    return [*chosen[:-1], prev] if len(chosen) > 1 else [*chosen, prev]


def _score(scene: _Scene, cfg: FitConfig, candidates: list[tuple[np.ndarray, np.ndarray, str]]) -> _Batch:
    rot = torch.as_tensor(np.stack([c[0] for c in candidates]), dtype=torch.float32)
    trans = torch.as_tensor(np.stack([c[1] for c in candidates]), dtype=torch.float32)
    scale = torch.ones(len(candidates))
    with torch.no_grad():
        loss = _losses(scene, cfg, rot, trans, scale, _visibility(scene, rot, trans, scale))["total"]
    return _Batch(rot, trans, scale, loss, [c[2] for c in candidates])


def _rescore(scene: _Scene, cfg: FitConfig, batch: _Batch) -> _Batch:
    """The same poses with their loss on this scene's grid."""
    with torch.no_grad():
        vis = _visibility(scene, batch.rotation, batch.translation, batch.scale)
        loss = _losses(scene, cfg, batch.rotation, batch.translation, batch.scale, vis)["total"]
    return _Batch(batch.rotation, batch.translation, batch.scale, loss, list(batch.labels))


def _refine(
    scene: _Scene, cfg: FitConfig, start: _Batch, iterations: int, surface_search_every: int = 1,
    trail: list[tuple[torch.Tensor, torch.Tensor]] | None = None, keep: int = 0, distinct=None,
) -> _Batch:
    """Adam on every pose of the batch at once; returns each one's best pose seen (the loss is not monotone).

    The batch loss is the SUM of the per-pose losses, so each pose gets exactly its own gradient, and Adam's
    moments are per element: the result equals refining each pose alone. surface_search_every: steps between
    searches for the body surface points nearest the object's (between them each keeps its partner, which
    only overstates its distance a little while the pose moves; every step: searched incrementally, exactly).
    keep > 0: after half the steps only the keep best poses so far that differ (``distinct(a, b)``, twins
    filling up) go on; the others return their best pose of the first half."""
    rot6d = matrix_to_rotation_6d(start.rotation).clone().requires_grad_()
    trans = start.translation.clone().requires_grad_()
    scale = start.scale.clone().requires_grad_(cfg.optimise_scale)
    groups = [{"params": [rot6d], "lr": cfg.lr_rotation}, {"params": [trans], "lr": cfg.lr_translation}]
    if cfg.optimise_scale:
        groups.append({"params": [scale], "lr": cfg.lr_scale})
    optimiser = torch.optim.Adam(groups, fused=True)  # one kernel per group, not ~10 small ops per parameter
    best = _Batch(start.rotation.clone(), start.translation.clone(), start.scale.clone(),
                  torch.full((len(start.labels),), float("inf")), list(start.labels))
    since = torch.zeros(len(start.labels), dtype=torch.int64)
    active = torch.arange(len(start.labels))  # the poses still refined (keep: the others stop half-way)
    visibility = None
    label_nearest = None  # the object points' nearest body surface samples
    # the body surface searched every step: incrementally (exact), from the last step's answers. The contact
    # searches are not tracked: their trees hold a few hundred points, and a fresh k-d tree query costs less
    # than the tracking's bookkeeping (0.08 against 0.14 s a fit)
    surface_search = TrackedNearest(scene.surface.tree, reach=_label_reach(cfg)) if surface_search_every == 1 else None
    shift_rows = None  # None: every outline shift; else each pose's window around its last best one
    window = torch.arange(-cfg.mask_shift_window, cfg.mask_shift_window + 1)
    half = max(1, iterations // 2)
    for step in range(iterations + 1):  # the last pass only scores the pose the last step reached
        if not bool(torch.isfinite(rot6d.detach().sum() + trans.detach().sum() + scale.detach().sum())):
            break  # a diverged step (a non-finite pose makes the sum so): keep the best poses seen so far
        refresh = step % max(1, cfg.occlusion_update_every) == 0
        if 0 < keep < len(active) and step == half + 1:  # past the blur's annealing: the losses compare
            active = active[torch.as_tensor(_best_distinct(best.take(active.numpy()), keep, distinct, fill=True))]
            refresh, label_nearest = True, None
        rot = rotation_6d_to_matrix(rot6d[active])
        pose_trans, pose_scale = trans[active], scale[active]
        if refresh:  # the body's occlusion and every shift, refreshed
            visibility = _visibility(scene, rot.detach(), pose_trans.detach(), pose_scale.detach())
            shift_rows = None
            if trail is not None:
                trail.append((rot.detach().clone(), pose_trans.detach().clone()))
        if step % max(1, surface_search_every) == 0:
            label_nearest = None
        # blur annealed from silhouette_sigma_start to silhouette_sigma over the first half: a wider basin
        frac = min(1.0, step / half)
        sigma = float(cfg.silhouette_sigma_start ** (1 - frac) * cfg.silhouette_sigma**frac)
        losses = _losses(scene, cfg, rot, pose_trans, pose_scale, visibility, sigma, shift_rows, label_nearest,
                         surface_search)
        label_nearest = losses["label_nearest"]
        if shift_rows is None and len(window) < len(scene.mask_shifts):
            shift_rows = (losses["mask_shift_index"][:, None] + window).clamp(0, len(scene.mask_shifts) - 1)
        total = losses["total"].detach()
        if sigma <= cfg.silhouette_sigma * 1.0001:  # only losses at the final blur are comparable
            better = total < best.loss[active]
            improved = total < best.loss[active] - cfg.early_stop_tolerance
            rows = active[better]
            best.rotation[rows] = rot.detach()[better]
            best.translation[rows] = pose_trans.detach()[better]
            best.scale[rows] = pose_scale.detach()[better]
            best.loss[rows] = total[better]
            since[active] = torch.where(improved, 0, since[active] + 1)
            if cfg.early_stop_patience > 0 and bool((since[active] > cfg.early_stop_patience).all()):
                break
        if step == iterations:
            break
        optimiser.zero_grad(set_to_none=True)
        losses["total"].sum().backward()
        optimiser.step()
        if cfg.optimise_scale:
            with torch.no_grad():
                scale.clamp_(0.2, 5.0)
    return best


def _refine_newton(
    scene: _Scene, cfg: FitConfig, start: _Batch, iterations: int,
    trail: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> _Batch:
    """Levenberg-Marquardt (``_levenberg_marquardt``) on the smooth loss, after the finalists' Adam steps: Adam
    finds the basin but creeps along its floor, this lands in a few iterations. The probes keep their pose's
    body surface partners (searched once per pose, tracked) and outline shift window."""
    window = torch.arange(-cfg.mask_shift_window, cfg.mask_shift_window + 1)
    search = TrackedNearest(scene.surface.tree, reach=_label_reach(cfg))  # (a new pose count starts afresh)

    def energy(
        cand_rot: torch.Tensor, cand_trans: torch.Tensor, cand_scale: torch.Tensor, probe_rot: torch.Tensor,
        probe_trans: torch.Tensor, p: int, memo: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = None
        if memo is not None and len(window) < len(scene.mask_shifts):
            rows = (memo[:, None] + window).clamp(0, len(scene.mask_shifts) - 1).repeat_interleave(p, 0)
        vis = _visibility(scene, cand_rot, cand_trans, cand_scale)
        vis = None if vis is None else vis.repeat_interleave(p, 0)
        nearest = _probe_partners(scene, cfg, search, cand_rot, cand_trans, cand_scale, p)
        losses = _losses(scene, cfg, probe_rot, probe_trans, cand_scale.repeat_interleave(p, 0), vis, None, rows,
                         nearest)
        return losses["total"], losses["mask_shift_index"]

    return _levenberg_marquardt(cfg, start, iterations, energy, trail)


def _refine_outline(
    scene: _Scene, cfg: FitConfig, outline: OutlineTarget, start: _Batch,
    trail: list[tuple[torch.Tensor, torch.Tensor]],
) -> _Batch:
    """Levenberg-Marquardt (``_levenberg_marquardt``) on the image-free terms plus the mask term measured along
    the object's visible outline (``OutlineTarget.misfit``, about 1 - IoU, pixel-accurate), for
    outline_iterations. The smooth mask term's minimum sits a few degrees from the exact mask score's, whose
    valley is about a pixel of outline wide; this walks down it (docs/fit_recovery.md, tenth session). The
    outline and its offset are taken at each pose and kept for its probes. Accepted poses join ``trail``."""

    search = TrackedNearest(scene.surface.tree, reach=_label_reach(cfg))

    def energy(
        cand_rot: torch.Tensor, cand_trans: torch.Tensor, cand_scale: torch.Tensor, probe_rot: torch.Tensor,
        probe_trans: torch.Tensor, p: int, memo: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        nearest = _probe_partners(scene, cfg, search, cand_rot, cand_trans, cand_scale, p)
        total = _image_free_total(cfg, _body_terms(scene, cfg, probe_rot, probe_trans,
                                                   cand_scale.repeat_interleave(p, 0), nearest))
        parts = []
        for i, (rot, trans) in enumerate(zip(cand_rot.detach().double().numpy(), cand_trans.detach().double().numpy())):
            samples = outline.samples(rot, trans)
            rows = slice(i * p, (i + 1) * p)
            if samples is None:  # no visible outline: the exact score's value for an unseen object
                parts.append(torch.ones(p))
            else:
                parts.append(outline.misfit(samples, probe_rot[rows], probe_trans[rows], cfg.outline_robust_px)
                             + cfg.mask_shift_cost * abs(samples.shift))
        return total + cfg.weight_mask * torch.cat(parts), torch.zeros(len(probe_rot), dtype=torch.int64)

    return _levenberg_marquardt(cfg, start, cfg.outline_iterations, energy, trail)


def _probe_partners(
    scene: _Scene, cfg: FitConfig, search: TrackedNearest, cand_rot: torch.Tensor, cand_trans: torch.Tensor,
    cand_scale: torch.Tensor, p: int,
) -> torch.Tensor:
    """(n*p, L) the body surface samples nearest each pose's test points, repeated for its p probes: the probes
    keep their pose's partners, searched once per pose (tracked), not per probe."""
    with torch.no_grad():
        points = cand_scale[:, None, None] * scene.test_local @ cand_rot.transpose(1, 2) + cand_trans[:, None]
        return scene.surface.nearest(points, _label_reach(cfg), search).repeat_interleave(p, 0)


def _levenberg_marquardt(
    cfg: FitConfig, start: _Batch, iterations: int, energy,
    trail: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> _Batch:
    """Levenberg-Marquardt on each pose's 6 tangent coordinates (a turn about the object's centre, a move).
    The gradient comes from autograd and the Hessian from the gradients at 6 probe poses a small turn or move
    away (every newton_hessian_every iterations; the pose's last one in between), all poses and probes in one
    batch. Only a lower energy is accepted (else the damping grows); a pose stops when its step is negligible.
    Returns each pose's last accepted pose and energy; accepted poses join ``trail``.

    energy(cand_rot (n,3,3), cand_trans (n,3), cand_scale (n,), probe_rot (n*p,3,3), probe_trans (n*p,3), p,
    memo) -> (energy (n*p,) of the probes, the first of each pose's p being the pose itself; memo (n*p,)
    int64): memo (n,) is what the energy returned at each pose's last accepted evaluation (None at the
    first), for the energy's own state (the smooth loss's outline shift)."""
    count = len(start.labels)
    unit = torch.tensor([cfg.newton_probe_deg * math.pi / 180.0] * 3 + [cfg.newton_probe_m] * 3)
    probes = torch.cat((torch.zeros(1, 6), torch.diag(unit)))  # (7,6)
    rot, trans, scale = start.rotation.clone(), start.translation.clone(), start.scale.clone()
    loss = torch.full((count,), float("inf"))
    grad = torch.zeros(count, 6)
    hess = torch.zeros(count, 6, 6)
    damping = torch.full((count,), cfg.newton_damping)
    step = torch.zeros(count, 6)  # in probe units
    active = torch.arange(count)
    memo = torch.zeros(count, dtype=torch.int64)

    def evaluate(
        poses: tuple[torch.Tensor, torch.Tensor], p: int, first: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(energy (n,), gradient (n,p,6) in probe units, memo (n,)) at the first p probes of each pose."""
        cand_rot, cand_trans = poses
        n = len(cand_rot)
        delta = probes[:p].repeat(n, 1).requires_grad_()
        all_rot = rotation_vector_to_matrix(delta[:, :3]) @ cand_rot.repeat_interleave(p, 0)
        all_trans = cand_trans.repeat_interleave(p, 0) + delta[:, 3:]
        total, extra = energy(cand_rot, cand_trans, scale[active], all_rot, all_trans, p,
                              None if first else memo[active])
        (g_all,) = torch.autograd.grad(total.sum(), delta)
        return total.detach().reshape(n, p)[:, 0], (g_all * unit).reshape(n, p, 6), extra.reshape(n, p)[:, 0]

    finite = torch.isfinite(rot.sum((1, 2)) + trans.sum(1) + scale)
    active = active[finite]  # a non-finite pose keeps an infinite energy, as in _refine
    for it in range(iterations + 1):
        if len(active) == 0:
            break
        move = step[active] * unit  # each active pose moved by its step (none at the first pass)
        cand = (rotation_vector_to_matrix(move[:, :3]) @ rot[active], trans[active] + move[:, 3:])
        full = it % cfg.newton_hessian_every == 0  # probes: the Hessian anew
        f_new, g_all, new_memo = evaluate(cand, 7 if full else 1, it == 0)
        g0 = g_all[:, 0]
        if full:
            h_new = (g_all[:, 1:] - g_all[:, :1]).transpose(1, 2)  # column i: d grad / d probe i
            h_new = 0.5 * (h_new + h_new.transpose(1, 2))
        else:  # the pose's last Hessian (it moved little)
            h_new = hess[active]
        better = f_new < loss[active]
        acc = active[better]
        rot[acc], trans[acc], loss[acc] = cand[0][better].detach(), cand[1][better].detach(), f_new[better]
        grad[acc], hess[acc], memo[acc] = g0[better], h_new[better], new_memo[better]
        damping[acc] = damping[acc] / 3.0
        damping[active[~better]] = damping[active[~better]] * 4.0
        if trail is not None and bool(better.any()):
            trail.append((rot[acc].clone(), trans[acc].clone()))
        if it == iterations:
            break
        # the next step of every active pose, from its accepted gradient and Hessian (saddle-free, damped)
        e, v = torch.linalg.eigh(hess[active])
        scale_e = e.abs() + damping[active, None] * e.abs().amax(-1, keepdim=True).clamp(min=1e-6)
        proposal = -(v @ ((v.transpose(1, 2) @ grad[active, :, None])[..., 0] / scale_e)[..., None])[..., 0]
        norm = proposal.norm(dim=-1, keepdim=True)
        proposal = proposal * (cfg.newton_max_step / norm).clamp(max=1.0)
        step[active] = proposal
        still = (norm[:, 0] > cfg.newton_min_step) & (damping[active] < 1e4) & torch.isfinite(proposal).all(-1)
        active = active[still]
    return _Batch(rot, trans, scale, loss, list(start.labels))


@dataclass
class _Polished:
    """What the exact polish chose (centred frame), and why."""

    rotation: torch.Tensor  # (3,3)
    translation: torch.Tensor  # (3,)
    report: dict[str, float]
    excess: list[float]  # pooled frames only: each frame's excess total at the chosen pose (see _exact_polish)
    rival: tuple[np.ndarray, np.ndarray, float] | None  # (rotation, translation, exact total) of the runner-up
    kept_previous: bool = False  # the stream's tie-break chose a near-tie over the lowest total


def _exact_polish(
    scene: _Scene, cfg: FitConfig, exact: ExactMaskScore, centre: np.ndarray, rot: torch.Tensor,
    trans: torch.Tensor, pivot: np.ndarray, distinct, differs, pooled: Sequence[_PooledFrame] = (),
    own_poses: int | None = None, nearer_previous: Callable[[tuple[np.ndarray, np.ndarray]], tuple] | None = None,
) -> _Polished:
    """The pose (centred frame) of lowest exact total: the exact_polish_starts best ones of the given poses
    (B,3,3), (B,3) that are ``distinct`` from each other, each improved by a random search. Each round tries
    exact_polish_samples turns about the contact region (pivot, centred object frame) plus small moves, keeps
    the best if it is lower, and narrows the steps when none is.

    The exact total is the image-free terms plus the mask term computed exactly (``ExactMaskScore``): the
    smooth mask term the gradient needs misjudges eroded/dilated masks and the body's cover enough to move
    the minimum by 5-25 degrees on the benchmark's noisy scenes, where the exact one prefers the true pose.
    pooled: earlier frames of a held object: their exact totals at the poses moved by the hand's motion are
    added (the returned mask loss and shift stay this frame's). Also returns, when frames are pooled, for each
    frame (this one first) how much more its own exact total is at the chosen pose than at its own fit (this
    frame: at the best of the first own_poses given poses, its own; default all); else an empty list.
    The runner-up: the lowest exact total among the other polished starts and the given poses that ``differs``
    (a different pose modulo the symmetry) from the chosen one; None when none does.
    nearer_previous: a stream's distance to its previous fit. The given pose nearest it is polished too (one
    start more, unless a start is its twin), and among the polished poses whose totals are within
    ambiguity_loss_gap of the lowest and differ from it, the nearest is chosen, so that a near-tie does not
    flip the placement from frame to frame; the runner-up's total may then be lower (a negative gap)."""
    rng = np.random.default_rng(cfg.seed)
    pivot_t = torch.as_tensor(pivot, dtype=torch.float32)

    def frame_totals(rots: torch.Tensor, transl: torch.Tensor) -> tuple[list[np.ndarray], list[tuple[float, int]]]:
        own, masks = _exact_total(scene, exact, cfg, centre, rots, transl)
        then = [_exact_total(frame.scene, frame.exact, cfg, centre, frame.rotation @ rots,
                             transl @ frame.rotation.T + frame.translation)[0] for frame in pooled]
        return [own, *then], masks

    def energy(rots: torch.Tensor, transl: torch.Tensor) -> tuple[np.ndarray, list[tuple[float, int]]]:
        totals, masks = frame_totals(rots, transl)
        return np.sum(totals, axis=0), masks

    start_totals, masks = frame_totals(rot, trans)
    values = np.sum(start_totals, axis=0)
    evaluations = len(values)
    pool = _Batch(rot, trans, torch.ones(len(rot)), torch.as_tensor(values, dtype=torch.float32), [""] * len(rot))
    results = []
    given = [(r.double().numpy(), t.double().numpy()) for r, t in zip(rot, trans)]
    starts = _best_distinct(pool, cfg.exact_polish_starts, distinct, fill=False)
    if nearer_previous is not None:
        nearest = min(range(len(given)), key=lambda i: nearer_previous(given[i]))
        if all(differs(given[nearest], given[i]) for i in starts):
            starts.append(nearest)
    for start in starts:
        cur_rot, cur_trans, cur, cur_mask = rot[start], trans[start], float(values[start]), masks[start]
        turn, move = np.radians(cfg.exact_polish_turn_deg), cfg.exact_polish_move_m
        for _ in range(cfg.exact_polish_rounds):
            n = cfg.exact_polish_samples
            turns = torch.as_tensor(Rotation.from_rotvec(rng.normal(0.0, turn, (n, 3))).as_matrix(),
                                    dtype=torch.float32)
            anchor = cur_rot @ pivot_t + cur_trans  # the contact region, camera frame
            rots = turns @ cur_rot
            transl = (turns @ (cur_trans - anchor)[:, None])[..., 0] + anchor
            transl = transl + torch.as_tensor(rng.normal(0.0, move, (n, 3)), dtype=torch.float32)
            new_values, new_masks = energy(rots, transl)
            evaluations += n
            j = int(np.argmin(new_values))
            if new_values[j] < cur - 1e-6:
                cur_rot, cur_trans, cur, cur_mask = rots[j], transl[j], float(new_values[j]), new_masks[j]
            else:
                turn, move = 0.6 * turn, 0.6 * move
        results.append((cur, cur_rot, cur_trans, cur_mask))
    def pose(result: tuple) -> tuple[np.ndarray, np.ndarray]:
        return result[1].double().numpy(), result[2].double().numpy()

    lowest = chosen = min(results, key=lambda r: r[0])
    if nearer_previous is not None:
        tied = [r for r in results if r is lowest or (r[0] - lowest[0] < cfg.ambiguity_loss_gap
                                                     and differs(pose(lowest), pose(r)))]
        chosen = min(tied, key=lambda r: nearer_previous(pose(r)))
    kept_previous = chosen is not lowest
    cur, cur_rot, cur_trans, cur_mask = chosen
    report = {"exact_total": cur, "exact_mask_loss": cur_mask[0], "exact_mask_shift_px": float(cur_mask[1]),
              "exact_evaluations": float(evaluations)}
    others = [(float(r[0]), *pose(r)) for r in results] + [(float(v), *g) for v, g in zip(values, given)]
    chosen_pose = pose(chosen)
    rival = next(((r, t, v) for v, r, t in sorted(others, key=lambda x: x[0]) if differs(chosen_pose, (r, t))), None)
    if not pooled:
        return _Polished(cur_rot, cur_trans, report, [], rival, kept_previous)
    own_best = float(start_totals[0][: len(rot) if own_poses is None else own_poses].min())
    parts = [float(t[0]) for t in frame_totals(cur_rot[None], cur_trans[None])[0]]
    excess = [parts[0] - own_best] + [part - frame.own_total for part, frame in zip(parts[1:], pooled)]
    report["exact_total_frame"] = parts[0]
    return _Polished(cur_rot, cur_trans, report, excess, rival, kept_previous)


def _exact_total(
    scene: _Scene, exact: ExactMaskScore, cfg: FitConfig, centre: np.ndarray, rots: torch.Tensor,
    transl: torch.Tensor,
) -> tuple[np.ndarray, list[tuple[float, int]]]:
    """(B,) image-free terms + the exact mask term of poses (B,3,3), (B,3) (centred object frame) in one frame,
    and each pose's exact (mask loss, shift)."""
    with torch.no_grad():
        body = _image_free_total(cfg, _body_terms(scene, cfg, rots, transl, torch.ones(len(rots)))).double().numpy()
    masks = [exact(r, t - r @ centre) for r, t in zip(rots.double().numpy(), transl.double().numpy())]
    return body + cfg.weight_mask * np.array([m[0] for m in masks]), masks


def _image_free_total(cfg: FitConfig, terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The weighted sum of the terms that do not look at the image (``_body_terms``)."""
    return (cfg.weight_contact * terms["contact"] + cfg.weight_penetration * terms["penetration"]
            + cfg.weight_labels * terms["labels"])


def _start_poses(
    cfg: FitConfig, obj_v: np.ndarray, obj_f: np.ndarray, centre: np.ndarray, p_obj: np.ndarray,
    hum_v: np.ndarray, hum_f: np.ndarray, p_hum: np.ndarray, mask: np.ndarray, k: np.ndarray,
    init_rotation: np.ndarray | None, init_translation: np.ndarray | None,
) -> tuple[list[tuple[np.ndarray, np.ndarray, str]], dict[str, float]]:
    """(rotation, centre translation, label) start poses, each also refined by contact ICP ("<label>+icp").

    With a given rotation: that pose only. Without: the multi-hypothesis rotations
    (:func:`ivlm_core.fitting.hypotheses.start_rotations`) at the mask centre and the contact depth, refined
    by ICP, and each also with its object contact centroid on the body's ("<label>+anchored", not refined;
    only without a given translation) and, when the body's contacts form several regions, on each region's
    ("<label>+region<r>")
    """
    obj_sel = p_obj > cfg.object_contact_threshold
    obj_normals = _vertex_normals(obj_v, obj_f)
    hum_points, hum_normals, hum_p = sample_contact_surface(
        hum_v, hum_f, p_hum, cfg.human_contact_threshold, seed=cfg.seed
    )
    # the body's contact regions (a false blob on the other hand is one): starts on each one alone too, on the
    # max_start_regions with the most contact mass (scattered labels can make dozens of regions)
    count, region = _regions(hum_points, cfg.contact_cluster_m)
    if count > 1:
        mass = np.bincount(region, weights=hum_p, minlength=count)
        top = np.argsort(-mass, kind="stable")[: cfg.max_start_regions]
        rank = np.full(count, -1, dtype=np.int64)
        rank[top] = np.arange(len(top))
        count, region = len(top), rank[region]  # -1: a region with no starts of its own
    if init_rotation is not None:
        rotations = [(np.asarray(init_rotation, dtype=np.float64), "given")]
    else:
        rotations = start_rotations(
            obj_v - centre, obj_normals, p_obj, cfg.object_contact_threshold, hum_normals, hum_p, mask,
            human_regions=region,
        )
    poses: list[tuple[np.ndarray, np.ndarray, str]] = []
    depth = contact_region_depth(hum_v, p_hum, cfg.human_contact_threshold)
    for rot, label in rotations:
        if init_translation is None:
            poses.append((rot, mask_centre_translation(mask, k, depth), label))
        else:
            poses.append((rot, rot @ centre + np.asarray(init_translation, dtype=np.float64), label))
    report = {"icp_iterations": 0.0, "icp_rmse_m": float("nan")}
    touched, touched_normals, touched_p = (obj_v - centre)[obj_sel], obj_normals[obj_sel], p_obj[obj_sel]
    refined = []
    if cfg.icp_iterations > 0 and obj_sel.sum() >= 3 and len(hum_points) >= 3:
        fits = contact_icp_batch(
            touched, touched_normals, hum_points, hum_normals, np.stack([rot for rot, _, _ in poses]),
            np.stack([trans for _, trans, _ in poses]), touched_p, hum_p, cfg.icp_iterations,
            cfg.icp_normal_weight, cfg.icp_max_normal_angle_deg, robust_scale_m=cfg.icp_robust_scale_m,
        )
        refined = [(icp.rotation, icp.translation, label + "+icp") for icp, (_, _, label) in zip(fits, poses)]
        report = {"icp_iterations": float(fits[-1].iterations), "icp_rmse_m": fits[-1].rmse}
    anchored = []
    if init_translation is None and touched_p.sum() > 0 and hum_p.sum() > 0:
        # each rotation again with its contact patch on the body's: for an elongated object seen end-on and
        # touching at one end, the mask centre at the contact depth is tens of centimetres from its centre, too
        # far for the ICP or the short fits to recover (fit_recovery: a racket against the torso, 62 degrees
        # off). Not refined by ICP as well: that did not change the benchmark's fits and cost 0.07 s a fit
        rots = [rot for rot, _, _ in poses]
        # the object's patch weighted by its density as in the contact term: stray false labels scattered over
        # the object would pull its centroid towards the object's centre
        touched_w = _density_weighted(cfg, obj_v, touched, touched_p)
        moved = contact_anchored_translations(rots, touched, touched_w, hum_points, hum_p)
        anchored = [(rot, trans, label + "+anchored") for (rot, _, label), trans in zip(poses, moved)]
        # ... and on each body contact region alone when there are several (the object may touch only one:
        # the centroid of two hands is on neither)
        for r in range(count if count > 1 else 0):
            moved = contact_anchored_translations(rots, touched, touched_w, hum_points[region == r],
                                                  hum_p[region == r])
            anchored += [(rot, trans, f"{label}+region{r}") for (rot, _, label), trans in zip(poses, moved)]
    return poses + anchored + refined, report


ObjectFitConfig = FitConfig  # the name the pipeline uses


def fit_object_to_body(
    object_vertices: np.ndarray, object_faces: np.ndarray, object_contact: np.ndarray,
    body_vertices: np.ndarray, body_faces: np.ndarray, body_contact: np.ndarray,
    object_mask: np.ndarray, camera_k: np.ndarray, config: FitConfig | None = None,
    init_rotation: np.ndarray | None = None, init_translation: np.ndarray | None = None,
    symmetry: Symmetry | None = None, previous_pose: tuple[np.ndarray, np.ndarray] | None = None,
    history: Sequence[FrameEvidence] = (),
) -> ObjectFitResult:
    """:func:`fit_object` with the pipeline's argument names (the human is the placed SMPL-X body)."""
    return fit_object(
        object_vertices, object_faces, object_contact, body_vertices, body_faces, body_contact, object_mask,
        camera_k, config, init_rotation=init_rotation, init_translation=init_translation, symmetry=symmetry,
        previous_pose=previous_pose, history=history,
    )


def _check_mesh(
    name: str, vertices: np.ndarray, faces: np.ndarray, contact: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = checked_vertices(vertices, f"{name} vertices")
    f = np.asarray(faces, dtype=np.int64)
    p = np.asarray(contact, dtype=np.float64).reshape(-1)
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0 or f.min() < 0 or f.max() >= len(v):
        raise InvalidInputError(f"{name} faces must be (F,3) indices into {len(v)} vertices")
    if p.shape[0] != len(v) or not np.isfinite(p).all():
        raise InvalidInputError(f"{name} contact needs one finite value per vertex ({len(v)}), got {p.shape}")
    return v, f, np.clip(p, 0.0, 1.0)


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    return np.asarray(trimesh.Trimesh(vertices, faces, process=False, validate=False).vertex_normals)


def _prepare(
    cfg: FitConfig, local: np.ndarray, faces: np.ndarray, p_obj: np.ndarray, hum_v: np.ndarray,
    hum_f: np.ndarray, p_hum: np.ndarray, mask: np.ndarray, k: np.ndarray, use_occlusion: bool,
    resolution: int | None = None, body_depth: np.ndarray | None = None, surface: _BodySurface | None = None,
) -> _Scene:
    """The loss's inputs with the silhouette grid at ``resolution`` cells (default silhouette_resolution);
    body_depth: the body's depth image, surface: its sampled surface, when already made."""
    rng = np.random.default_rng(cfg.seed)
    # The silhouette mesh may be merged/decimated: it only has to draw the outline.
    sil = trimesh.Trimesh(local.copy(), faces.copy(), process=False, validate=False)
    sil.merge_vertices()
    sil_v, sil_f = decimate_by_clustering(
        np.asarray(sil.vertices), np.asarray(sil.faces), cfg.max_silhouette_faces
    )
    cull = bool(trimesh.Trimesh(sil_v, sil_f, process=False).is_watertight) or encloses_volume(sil_v, sil_f)

    rows, cols = np.nonzero(mask)
    box = (cols.min(), rows.min(), cols.max(), rows.max())
    shifts = _mask_shifts(cfg)
    grid = SilhouetteGrid.around_box(box, mask.shape, resolution or cfg.silhouette_resolution, cfg.silhouette_margin)
    if cfg.centroid_target == "mask_centroid":
        target = np.array([cols.mean(), rows.mean()])
    else:
        target = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])

    obj_idx = np.nonzero(p_obj > cfg.object_contact_threshold)[0]
    if len(obj_idx) > cfg.max_object_contact_points:
        obj_idx = np.sort(rng.choice(obj_idx, cfg.max_object_contact_points, replace=False))
    # the body's contact surface, sampled (a coarse body has vertices centimetres apart)
    hum_points, _, hum_p = sample_contact_surface(
        hum_v, hum_f, p_hum, cfg.human_contact_threshold, cfg.max_human_contact_points, seed=cfg.seed
    )

    test_idx, test_w = _test_points(p_obj, cfg, rng)
    human_depth = None
    if use_occlusion:
        depth = render_depth([(hum_v, hum_f)], k, mask.shape).depth if body_depth is None else body_depth
        human_depth = grid.downsample_depth(depth)

    obj_w = _density_weighted(cfg, local, local[obj_idx], p_obj[obj_idx])
    hum_w = _density_weighted(cfg, local, hum_points, hum_p)

    def t32(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.array(x), dtype=torch.float32)

    return _Scene(
        local=t32(local), sil_vertices=t32(sil_v), sil_faces=torch.as_tensor(sil_f, dtype=torch.int64),
        sil_edges=EdgeTable.from_faces(sil_f), cull=cull, grid=grid,
        mask=_mask_target(grid, mask, cfg), mask_shifts=torch.as_tensor(shifts, dtype=torch.float32),
        mask_weight=_mask_weight(grid, mask, cfg.mask_boundary_band_px),
        centroid_target=t32(target), camera_k=t32(k),
        obj_contact_local=t32(local[obj_idx]), obj_contact_p=t32(obj_w),
        human_contact=t32(hum_points), human_contact_p=t32(hum_w),
        human_tree=cKDTree(np.asarray(hum_points, np.float32).astype(np.float64)),
        obj_contact_tree=cKDTree(np.asarray(local[obj_idx], np.float32).astype(np.float64)),
        test_local=t32(local[test_idx]), test_p=t32(p_obj[test_idx]), test_weight=t32(test_w),
        surface=surface or _body_surface(cfg, local, hum_v, hum_f, p_hum),
        human_depth=human_depth, occlusion_margin=cfg.occlusion_margin_m,
    )


def _density_weighted(cfg: FitConfig, object_vertices: np.ndarray, points: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Contact probabilities p of points times their density within contact_density_radius x the object's
    size: the weights of the contact term (and of the contact-anchored starts)."""
    radius = cfg.contact_density_radius * float(np.linalg.norm(np.ptp(object_vertices, axis=0)))
    return p * _density(points, radius)


def _density(points: np.ndarray, radius: float) -> np.ndarray:
    """Fraction of the points within ``radius`` of each point, relative to the densest: a contact region
    is a compact patch, a model's stray false contacts are isolated and get little weight."""
    if len(points) == 0:
        return np.zeros(0)
    counts = np.array([len(n) for n in cKDTree(points).query_ball_point(points, radius)], dtype=np.float64)
    return counts / counts.max()


def _mask_shifts(cfg: FitConfig) -> np.ndarray:
    """Outline shifts (pixels) the mask term tries: 0 and up to +-mask_shift_px in mask_shift_step_px steps.
    Only 0 when the scale is optimised: a uniformly wider outline is also a larger object, and the mask's
    outline is then what tells the scale."""
    if cfg.mask_shift_px <= 0 or cfg.mask_shift_step_px <= 0 or cfg.optimise_scale:
        return np.zeros(1)
    steps = np.arange(-cfg.mask_shift_px, cfg.mask_shift_px + 1, cfg.mask_shift_step_px, dtype=np.float64)
    return np.union1d(steps, [0.0])


def _mask_target(grid: SilhouetteGrid, mask: np.ndarray, cfg: FitConfig) -> torch.Tensor:
    """(h,w): the mask's cover of each cell ("area"), or the mask blurred like the silhouette ("blurred")."""
    if cfg.mask_target == "blurred":
        return grid.blurred_mask(mask, cfg.silhouette_sigma)
    return grid.downsample_mask(mask)


def _mask_weight(grid: SilhouetteGrid, mask: np.ndarray, band_px: int) -> torch.Tensor:
    """Per-cell weight of the mask term: the fraction of the cell outside the band of ``band_px`` pixels on
    either side of the mask outline (a predicted mask's outline is off by a few pixels either way)."""
    # never more than a third of the mask's half-width: a thin object's mask is mostly outline
    band_px = min(band_px, int(ndimage.distance_transform_edt(mask).max() / 3))
    if band_px <= 0:
        return torch.ones((grid.height, grid.width))
    disk = np.hypot(*np.mgrid[-band_px : band_px + 1, -band_px : band_px + 1]) <= band_px
    band = ndimage.binary_dilation(mask, disk) & ~ndimage.binary_erosion(mask, disk)
    if band.all() or not (mask & ~band).any():  # a mask thinner than the band: keep its outline
        return torch.ones((grid.height, grid.width))
    return 1.0 - grid.downsample_mask(band)


def _grid_camera(scene: _Scene) -> np.ndarray:
    """Intrinsics whose pixels are the grid cells (cell centres at integer coordinates)."""
    g, k = scene.grid, scene.camera_k.double().numpy()
    return np.array(
        [
            [k[0, 0] / g.step, 0.0, (k[0, 2] - (g.x0 - 0.5)) / g.step - 0.5],
            [0.0, k[1, 1] / g.step, (k[1, 2] - (g.y0 - 0.5)) / g.step - 0.5],
            [0.0, 0.0, 1.0],
        ]
    )


def _visibility(
    scene: _Scene, rot: torch.Tensor, trans: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor | None:
    """(B,h,w) clearance of each cell from the body at each pose: 0 where the body is in front of the object
    (hidden), else the distance (cells) to the nearest hidden cell (inf when none is); no gradient.
    ``clearance > 0`` is the visible part; ``clearance > r`` is it eroded by r cells, as a mask whose outline
    is eroded also recedes from the body's edge."""
    if scene.human_depth is None or not torch.isfinite(scene.human_depth).any():
        return None
    g = scene.grid
    camera = _grid_camera(scene)
    human_depth = scene.human_depth.numpy()
    out = np.full((len(rot), g.height, g.width), np.inf, dtype=np.float32)
    posed = (scale[:, None, None] * scene.sil_vertices @ rot.transpose(1, 2) + trans[:, None]).detach().double()
    for b, verts in enumerate(posed.numpy()):
        obj_depth = render_depth([(verts, scene.sil_faces.numpy())], camera, (g.height, g.width)).depth
        covered = np.isfinite(obj_depth)
        if not covered.any():
            continue
        if not covered.all():  # cells beside the object take the depth of the nearest covered cell
            _, (ri, ci) = ndimage.distance_transform_edt(~covered, return_indices=True)
            obj_depth = obj_depth[ri, ci]
        # a margin keeps the body surface the object rests on from "occluding" the object's own rim
        visible = human_depth >= obj_depth - scene.occlusion_margin
        if not visible.all():
            out[b] = ndimage.distance_transform_edt(visible)
    return torch.from_numpy(out)


def _losses(
    scene: _Scene, cfg: FitConfig, rot: torch.Tensor, trans: torch.Tensor, scale: torch.Tensor,
    visibility: torch.Tensor | None, sigma: float | None = None, shift_rows: torch.Tensor | None = None,
    label_nearest: torch.Tensor | None = None, surface_search: TrackedNearest | None = None,
) -> dict[str, torch.Tensor]:
    """Each term as a (B,) tensor for the B poses rot (B,3,3), trans (B,3), scale (B,); visibility: the body
    clearance (``_visibility``). shift_rows: (B,k) indices of the outline shifts tried per pose (default all);
    "mask_shift_index" says which one the mask term took."""
    scale3 = scale[:, None, None]
    rot_t = rot.transpose(1, 2)
    sil_verts = scale3 * scene.sil_vertices @ rot_t + trans[:, None]
    sigma = sigma or cfg.silhouette_sigma
    visible = None if visibility is None else (visibility > 0).to(sil_verts.dtype)
    unoccluded = soft_silhouette(
        sil_verts, scene.sil_faces, scene.camera_k, scene.grid, sigma, scene.sil_edges, scene.cull,
    )
    sil = unoccluded if visible is None else unoccluded * visible
    # only the visible part counts: where the body hides the object, neither silhouette nor mask is compared;
    # nor in the band along the mask's outline, where a predicted mask is too wide or too narrow
    weight = scene.mask_weight[None] if visible is None else scene.mask_weight[None] * visible
    weight = weight.expand_as(sil)
    # IoU of the silhouette, its outline moved by each tried shift, with the mask; the best shift counts, plus
    # a small cost per pixel of shift
    if shift_rows is None:
        shift_rows = torch.arange(len(scene.mask_shifts)).expand(len(sil), -1)
    moved = _moved_silhouettes(scene, sil, unoccluded, sigma, visibility, shift_rows) * weight[:, None]
    inter = torch.einsum("bkhw,hw->bk", moved, scene.mask)
    union = (moved.sum((2, 3)) + (weight * scene.mask).sum((1, 2))[:, None] - inter).clamp(min=1e-6)
    shifted = 1.0 - inter / union + cfg.mask_shift_cost * scene.mask_shifts[shift_rows].abs()
    best = shifted.min(dim=1)
    losses = {"mask": best.values, "mask_shift_index": shift_rows.gather(1, best.indices[:, None])[:, 0]}
    centres = scene.grid.cell_centres().to(sil.dtype)
    weights = sil.reshape(len(sil), -1)
    centroid = weights @ centres / weights.sum(1, keepdim=True).clamp(min=1e-6)
    losses["centroid"] = ((centroid - scene.centroid_target) ** 2).sum(-1)

    losses.update(_body_terms(scene, cfg, rot, trans, scale, label_nearest, surface_search))

    losses["total"] = (
        cfg.weight_mask * losses["mask"]
        + cfg.weight_centroid * losses["centroid"]
        + cfg.weight_contact * losses["contact"]
        + cfg.weight_penetration * losses["penetration"]
        + cfg.weight_labels * losses["labels"]
    )
    return losses


def _body_terms(
    scene: _Scene, cfg: FitConfig, rot: torch.Tensor, trans: torch.Tensor, scale: torch.Tensor,
    label_nearest: torch.Tensor | None = None, surface_search: TrackedNearest | None = None,
) -> dict[str, torch.Tensor]:
    """The terms that do not look at the image, each (B,): contact, penetration, labels (and label_nearest,
    the test points' body surface samples)."""
    scale3 = scale[:, None, None]
    rot_t = rot.transpose(1, 2)
    terms: dict[str, torch.Tensor] = {}
    if len(scene.obj_contact_local) and len(scene.human_contact):
        obj_c = scale3 * scene.obj_contact_local @ rot_t + trans[:, None]  # (B,Co,3)
        hum = scene.human_contact
        # nearest partners found without gradient (a k-d tree each way), distances differentiated per pair
        with torch.no_grad():
            flat = obj_c.detach().reshape(-1, 3).double().numpy()
            to_hum = scene.human_tree.query(flat)[1]
            to_hum = torch.as_tensor(to_hum, dtype=torch.int64).reshape(obj_c.shape[:2])
            # human contacts taken into each pose's object frame, matched against the object contacts there
            hum_local = ((hum[None] - trans[:, None].detach()) @ rot.detach()) / scale3.detach()
            hum_flat = hum_local.reshape(-1, 3).double().numpy()
            to_obj = scene.obj_contact_tree.query(hum_flat)[1]
            to_obj = torch.as_tensor(to_obj, dtype=torch.int64).reshape(hum_local.shape[:2])
        batch = torch.arange(len(obj_c))[:, None]
        # contacts closer than the tolerance count as touching: a contact label means "within about a
        # centimetre", and pulling every labelled point onto the other surface would tilt the object into it
        tol = cfg.contact_tolerance_m
        obj_dist = torch.relu(((obj_c - hum[to_hum]).pow(2).sum(-1) + 1e-12).sqrt() - tol)
        hum_dist = torch.relu(((obj_c[batch, to_obj] - hum[None]).pow(2).sum(-1) + 1e-12).sqrt() - tol)
        if cfg.contact_cap_m > 0:
            # a body contact this far from the object is mostly a false one (a blob on the other hand): bounded
            # cost. Not the object's side: each object contact is measured to the NEAREST body contact, which a
            # far blob does not change, and capped it would stop pulling an object that is far from the body
            hum_dist = cfg.contact_cap_m * torch.tanh(hum_dist / cfg.contact_cap_m)
        obj_side = _trimmed_mean(obj_dist, scene.obj_contact_p, cfg.contact_keep_fraction)
        hum_side = _trimmed_mean(hum_dist, scene.human_contact_p, cfg.contact_keep_fraction)
        terms["contact"] = 0.5 * (obj_side + hum_side)
    else:
        terms["contact"] = trans.sum(1) * 0.0

    # the object's sampled vertices against the body surface: depth inside it, and the contact labels
    points = scale3 * scene.test_local @ rot_t + trans[:, None]  # (B,L,3)
    reach = _label_reach(cfg)
    if label_nearest is None:
        label_nearest = scene.surface.nearest(points, reach, surface_search)
    signed = scene.surface.signed_distance(points, label_nearest, reach)
    terms["penetration"] = (torch.relu(-signed) * scene.test_weight).sum(1)
    terms["labels"] = _label_nll(scene, cfg, signed)
    terms["label_nearest"] = label_nearest
    return terms


def _moved_silhouettes(
    scene: _Scene, sil: torch.Tensor, unoccluded: torch.Tensor, sigma: float,
    clearance: torch.Tensor | None, shift_rows: torch.Tensor,
) -> torch.Tensor:
    """(B,k,h,w): each pose's silhouette with its outline moved by the shifts scene.mask_shifts[shift_rows]
    (pixels, > 0: out): what a mask too wide or too narrow by that much shows, thin parts erased by the
    shrinking included (moving the MASK's outline back instead cannot restore what was erased).

    The silhouette blurred wide enough to reach the largest shift (a Gaussian blur of the sharp one) gives
    each cell's signed distance to the outline (exact for straight edges: blur = Phi(distance / wide));
    moved by d, the outline is Phi((distance + d) / sigma) again. Shift 0 keeps the sharp silhouette itself,
    so a correct mask is matched as precisely as without shifts. Where the body hides the object, a shrunken
    outline recedes from the body's edge too (clearance > -d). unoccluded: the silhouette before the body
    hides any of it."""
    cells = (scene.mask_shifts / scene.grid.step)[shift_rows]  # (B,k)
    zero = cells == 0
    moved = sil[:, None].expand(-1, cells.shape[1], -1, -1)
    if bool(zero.all()):
        return moved
    # one blur for every pose and window (a batch gives what each pose alone gives)
    largest = float(scene.mask_shifts.abs().max()) / scene.grid.step
    wide = max(sigma, largest / 3.0)
    extra = math.sqrt(wide**2 - sigma**2)
    reach = largest + 4 * wide
    if extra > 0:
        rows, cols = (_blur_band(n, extra, reach) for n in unoccluded.shape[1:])
        blurred = rows @ unoccluded @ cols
    else:  # a coarse grid: the silhouette's own blur already reaches the largest shift
        blurred = unoccluded
    # the distance is read off the blur's tails (down to 1e-30 outside, 1 - 2e-7 inside), in float64: the
    # gradient there (1 / pdf) overflows float32
    inside = (torch.special.ndtri(blurred.double().clamp(1e-30, 1.0 - 2e-7)) * wide).to(blurred.dtype)
    # cut where Phi is 0 or 1 to float precision: erf's gradient of far-out arguments underflows through a slow
    # path (the cut's zero gradient there differs from it by < 1e-22)
    shifted = torch.special.ndtr(((inside[:, None] + cells[:, :, None, None]) / sigma).clamp(-PHI_CUT, PHI_CUT))
    moved = torch.where(zero[:, :, None, None], moved, shifted)
    if clearance is not None:
        moved = moved * (clearance[:, None] > (-cells).clamp(min=0)[:, :, None, None]).to(moved.dtype)
    return moved


@functools.lru_cache(maxsize=64)
def _blur_band(n: int, sigma: float, reach: float) -> torch.Tensor:
    """(n,n) matrix of a Gaussian blur of ``sigma`` cells along one grid axis, cut beyond ``reach`` cells
    (beyond the grid counts as empty): band @ image @ band blurs an image. A silhouette blurred by s0 and
    then by sigma is the one blurred by sqrt(s0^2 + sigma^2): a second, wider blur for two small matrix
    products (several times faster than a one-channel convolution, backward included). Cached: a fit asks
    for the same few again and again; nothing writes into it."""
    offset = torch.arange(n, dtype=torch.float32)
    offset = offset[:, None] - offset[None, :]
    weights = torch.exp(-0.5 * (offset / sigma) ** 2) * (offset.abs() <= max(1.0, reach))
    return weights / torch.exp(-0.5 * (torch.arange(-n, n + 1, dtype=torch.float32) / sigma) ** 2).sum()


def _body_surface(
    cfg: FitConfig, obj_v: np.ndarray, hum_v: np.ndarray, hum_f: np.ndarray, p_hum: np.ndarray,
) -> _BodySurface:
    """The body surface the object's test points are measured against: the object touches the body's usable
    contacts, so it lies within its own size (plus the label term's reach) of them."""
    reach = float(np.linalg.norm(np.ptp(obj_v, axis=0))) + _label_reach(cfg)
    return _BodySurface.sample(hum_v, hum_f, cfg.body_surface_samples, cfg.seed,
                               near=hum_v[p_hum > cfg.human_contact_threshold], radius=reach)


def _label_reach(cfg: FitConfig) -> float:
    """Distance from the body beyond which a vertex is off it for the label term (q < 5e-5), however far:
    the body surface search stops there."""
    return cfg.label_distance_m + 10.0 * cfg.label_softness_m


def _label_nll(scene: _Scene, cfg: FitConfig, signed: torch.Tensor) -> torch.Tensor:
    """(B,) the object's contact labels' negative log-likelihood at each pose, per vertex (nats): a vertex at
    distance d from the body surface (signed: < 0 inside, ``_BodySurface``) is in contact with probability
    q = sigmoid((label_distance_m - d) / label_softness_m); a label p is then likely p q + (1 - p)(1 - q), and
    a label_outlier_rate of labels are anything (a flipped label costs at most -log(rate / 2)).

    Both halves of each label count: "touched" pulls a vertex to the body, and "not touched" keeps it off.
    The contact term pulls labelled points to the body's contacts only, so alone it prefers a pose that
    presses a whole face to the hand (every labelled point a little nearer) over the true one, whose
    labelled points are up to a couple of centimetres off; a pose like that puts unlabelled surface on the
    body, which this term charges for. signed: (B,L) the label points' signed distances to the body."""
    if len(scene.test_p) == 0 or cfg.weight_labels <= 0:
        return signed.new_zeros(len(signed))
    q = torch.sigmoid((cfg.label_distance_m - signed) / cfg.label_softness_m)
    p = scene.test_p
    likely = p * q + (1.0 - p) * (1.0 - q)
    rate = cfg.label_outlier_rate
    return -(torch.log((1.0 - rate) * likely + 0.5 * rate) * scene.test_weight).sum(1)


def _test_points(p_obj: np.ndarray, cfg: FitConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights) of up to object_test_points object vertices tested against the body: the ones
    labelled touched first (up to half: the label term needs them), the rest at random; each weighted by the
    share of the mesh's vertices it stands for."""
    count = cfg.object_test_points
    touched = np.nonzero(p_obj > cfg.object_contact_threshold)[0]
    others = np.nonzero(p_obj <= cfg.object_contact_threshold)[0]
    n_touched = min(len(touched), max(count // 2, count - len(others)))
    n_others = min(len(others), count - n_touched)
    pick_t = np.sort(rng.choice(touched, n_touched, replace=False)) if n_touched < len(touched) else touched
    pick_o = np.sort(rng.choice(others, n_others, replace=False)) if n_others < len(others) else others
    weights = np.concatenate((np.full(len(pick_t), len(touched) / max(1, len(pick_t))),
                              np.full(len(pick_o), len(others) / max(1, len(pick_o)))))
    return np.concatenate((pick_t, pick_o)).astype(np.int64), weights / max(1, len(p_obj))


def _trimmed_mean(distance: torch.Tensor, weight: torch.Tensor, keep: float) -> torch.Tensor:
    """(B,) p-weighted mean of the closest ``keep`` fraction of each row of (B,N) distances: false contacts
    (up to 1 - keep of them) are ignored, yet the term still grows without bound when the object leaves
    the true contacts, unlike a bounded robust kernel."""
    count = max(1, int(np.ceil(keep * distance.shape[1])))
    if count >= distance.shape[1]:  # all kept: no sort (the fit's default, once per step)
        return distance @ weight / weight.sum().clamp(min=1e-12)
    kept, index = torch.topk(distance, count, dim=1, largest=False)
    w = weight[index]
    return (kept * w).sum(1) / w.sum(1).clamp(min=1e-12)


def _regions_report(
    cfg: FitConfig, hum_v: np.ndarray, p_hum: np.ndarray, vertices: np.ndarray, faces: np.ndarray
) -> dict[str, float]:
    """How many body contact regions the fit used (after the region choice) and how many of them the placed
    object touches (a contact of the region within label_distance_m of its surface): a region left untouched
    was taken as a false contact (the other hand, a blob), which a planner may want to know."""
    above = p_hum > cfg.human_contact_threshold
    if not above.any():
        return {"contact_regions": 0.0, "contact_regions_touched": 0.0}
    count, label = _regions(hum_v[above], cfg.contact_cluster_m)
    surface, _ = trimesh.sample.sample_surface(trimesh.Trimesh(vertices, faces, process=False, validate=False),
                                               4096, seed=cfg.seed)
    distance, _ = cKDTree(surface).query(hum_v[above])
    touched = {int(r) for r in label[distance <= cfg.label_distance_m]}
    return {"contact_regions": float(count), "contact_regions_touched": float(len(touched))}


def _geometry_report(
    scene: _Scene, vertices: np.ndarray, p_obj: np.ndarray, hum_v: np.ndarray, p_hum: np.ndarray,
    cfg: FitConfig, rot: torch.Tensor, trans: torch.Tensor, scale: torch.Tensor, nearest: torch.Tensor,
) -> dict[str, float]:
    """Contact distance (object contacts to the nearest human contact, p-weighted) and penetration depth;
    nearest: the test points' body surface samples at this pose, as the loss found them."""
    report = {"contact_distance_m": float("nan")}
    obj_sel = p_obj > cfg.object_contact_threshold
    hum_sel = p_hum > cfg.human_contact_threshold
    if obj_sel.any() and hum_sel.any():
        dist, _ = cKDTree(hum_v[hum_sel]).query(vertices[obj_sel].astype(np.float64))
        report["contact_distance_m"] = float((dist * p_obj[obj_sel]).sum() / p_obj[obj_sel].sum())
    with torch.no_grad():
        points = scale * scene.test_local @ rot.T + trans
        signed = scene.surface.signed_distance(points, nearest, _label_reach(cfg))
    report["penetration_depth_m"] = float(torch.relu(-signed).max())
    return report
