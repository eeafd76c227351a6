"""Place a known object mesh next to a fixed human by its predicted contacts and its image mask.

Port of the reference ``optim/`` fit (spec 5) with its bugs fixed (spec 8.2): Adam over the object's 6D
rotation, translation (and optionally scale) minimising
  w_mask * (1 - IoU(soft silhouette, mask))  with a TRUE union (the reference divides by sum(S + M)),
  w_centroid * |silhouette centroid - mask centre|^2 (pixels),
  w_contact * sum_ij p_o,i p_h,j |o_i - h_j| / sum_ij p_o,i p_h,j  (object p zeroed below 0.3),
plus an ivlm term the reference lacks, w_penetration * mean depth of object surface samples inside the body
(signed distance along the nearest body vertex's normal), which stops the contact term from pulling the object
into the hand. The start pose comes from the mask centre at the contact depth (or a given pose), refined by
contact ICP; the better of the two by the full loss is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
import yaml
from scipy import ndimage
from scipy.spatial import cKDTree

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.fitting.icp import (
    contact_icp,
    contact_region_depth,
    mask_centre_translation,
    sample_contact_surface,
)
from ivlm_core.fitting.rotation import matrix_to_quaternion_xyzw, matrix_to_rotation_6d, rotation_6d_to_matrix
from ivlm_core.fitting.silhouette import (
    EdgeTable,
    SilhouetteGrid,
    decimate_by_clustering,
    encloses_volume,
    silhouette_centroid,
    soft_silhouette,
)
from ivlm_core.fitting.zbuffer import render_depth

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "fitting.yaml"


@dataclass
class FitConfig:
    """Weights, learning rates and budgets; ``config/fitting.yaml`` holds the same defaults, documented."""

    iterations: int = 250
    lr_rotation: float = 5e-2
    lr_translation: float = 1e-2
    lr_scale: float = 1e-2
    optimise_scale: bool = False
    weight_mask: float = 5.0
    weight_centroid: float = 1e-4
    weight_contact: float = 10.0
    weight_penetration: float = 100.0
    object_contact_threshold: float = 0.3
    human_contact_threshold: float = 0.5
    centroid_target: str = "mask_centroid"
    icp_iterations: int = 10
    icp_normal_weight: float = 0.05
    icp_max_normal_angle_deg: float = 60.0
    silhouette_resolution: int = 48
    silhouette_margin: float = 0.5
    silhouette_sigma: float = 0.5
    silhouette_sigma_start: float = 0.5
    mask_target: str = "area"
    start_candidates: int = 2
    start_candidates_without_pose: int = 8
    warmup_iterations: int = 30
    max_silhouette_faces: int = 4000
    max_object_contact_points: int = 256
    max_human_contact_points: int = 512
    penetration_samples: int = 512
    occlusion_update_every: int = 10
    occlusion_margin_m: float = 0.015
    early_stop_patience: int = 0
    early_stop_tolerance: float = 1e-4
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
        cfg = cls(**{k: type(getattr(cls(), k))(v) for k, v in data.items()})
        if cfg.mask_target not in ("area", "blurred"):
            raise InvalidInputError(f"mask_target: area|blurred, not {cfg.mask_target}")
        if cfg.centroid_target not in ("mask_centroid", "bbox_center"):
            raise InvalidInputError(f"centroid_target: mask_centroid|bbox_center, not {cfg.centroid_target}")
        if cfg.iterations < 0 or cfg.silhouette_resolution < 4 or cfg.silhouette_sigma <= 0:
            raise InvalidInputError("fitting config: iterations >= 0, silhouette_resolution >= 4, sigma > 0")
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
            "status": "ok",
            "rotation": self.rotation.astype(np.float64),
            "translation": self.translation.astype(np.float64),
            "scale": float(self.scale),
            "vertices": self.vertices,
            "report": dict(self.report),
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
    mask: torch.Tensor  # (h,w) block-averaged object mask
    centroid_target: torch.Tensor  # (2,) image (u, v)
    camera_k: torch.Tensor
    obj_contact_local: torch.Tensor  # (Co,3)
    obj_contact_p: torch.Tensor  # (Co,)
    human_contact: torch.Tensor  # (Ch,3)
    human_contact_p: torch.Tensor  # (Ch,)
    samples_local: torch.Tensor  # (S,3) object surface samples
    body_tree: cKDTree
    body_vertices: torch.Tensor
    body_normals: torch.Tensor
    human_depth: torch.Tensor | None  # (h,w) on the grid, inf where no body
    occlusion_margin: float


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
) -> ObjectFitResult:
    """Fit the object pose (mesh frame -> camera frame) against a fixed, camera-frame human mesh.

    object_contact / human_contact: per-vertex probabilities in the meshes' vertex order. object_mask: (H,W)
    bool in the image of intrinsics camera_k. init_rotation/init_translation: an optional starting pose of the
    mesh frame; without a translation the object starts at the mask centre at the human contact depth, and
    without a rotation the 24 axis-aligned rotations are tried (each also refined by contact ICP).
    report["iterations"] counts the Adam steps of all warmed-up start candidates.
    """
    start_time = time.perf_counter()
    cfg = config or FitConfig()
    obj_v, obj_f, p_obj = _check_mesh("object", object_vertices, object_faces, object_contact)
    hum_v, hum_f, p_hum = _check_mesh("human", human_vertices, human_faces, human_contact)
    mask = np.asarray(object_mask).astype(bool)
    k = np.asarray(camera_k, dtype=np.float64)
    if k.shape != (3, 3) or mask.ndim != 2:
        raise InvalidInputError(f"camera_k must be 3x3 and object_mask 2-D, got {k.shape} and {mask.shape}")
    if not mask.any():
        raise InvalidInputError("object mask is empty: cannot fit the object pose")

    centre = obj_v.mean(axis=0)
    scene = _prepare(cfg, obj_v - centre, obj_f, p_obj, hum_v, hum_f, p_hum, mask, k, use_occlusion)

    obj_sel = p_obj > cfg.object_contact_threshold
    candidates, icp_report = _start_poses(
        cfg, obj_v, obj_f, centre, p_obj, hum_v, hum_f, p_hum, mask, k, init_rotation, init_translation
    )
    # Rank start poses by the image and penetration terms only (ICP minimises the contact term by
    # construction, so that term would always favour it), warm each of the best few up with a short Adam run
    # on the full loss, and continue the winner: ICP can slide an object off its mask or flip it.
    with torch.no_grad():
        ranking = []
        for rot, trans, _ in candidates:
            r = torch.as_tensor(rot, dtype=torch.float32)
            t = torch.as_tensor(trans, dtype=torch.float32)
            losses = _losses(scene, cfg, r, t, torch.tensor(1.0), _visibility(scene, r, t, torch.tensor(1.0)))
            ranking.append(float(losses["total"] - cfg.weight_contact * losses["contact"]))
    keep = cfg.start_candidates if init_rotation is not None else cfg.start_candidates_without_pose
    order = np.argsort(ranking, kind="stable")[: max(1, keep)]
    runs = [_AdamRun(scene, cfg, candidates[i][0], candidates[i][1]) for i in order]
    if len(runs) > 1:
        for run in runs:
            run.step(min(cfg.warmup_iterations, cfg.iterations))
    winner = int(np.argmin([run.last_loss for run in runs]))
    run = runs[winner]
    run.step(cfg.iterations - run.iterations)

    with torch.no_grad():
        rot_t, trans_t, scale_t = rotation_6d_to_matrix(run.best[0]), run.best[1], run.best[2]
        final = _losses(scene, cfg, rot_t, trans_t, scale_t, _visibility(scene, rot_t, trans_t, scale_t))
    chosen_label = candidates[order[winner]][2]
    rotation = rot_t.double().numpy()
    s = float(scale_t)
    translation = trans_t.double().numpy() - s * rotation @ centre
    vertices = (s * obj_v @ rotation.T + translation).astype(np.float32)
    report = {f"loss_{name}": float(value) for name, value in final.items()}
    report.update(
        _geometry_report(scene, vertices, obj_sel, p_obj, hum_v, p_hum, cfg, rot_t, trans_t, scale_t)
    )
    report.update(icp_report)
    report.update(
        {
            "init_choice_icp": float(chosen_label == "icp"),
            "start_candidates": float(len(candidates)),
            "iterations": float(sum(r.iterations for r in runs)),
            "fit_time_s": time.perf_counter() - start_time,
        }
    )
    return ObjectFitResult(rotation, translation, s, vertices, report)


class _AdamRun:
    """One Adam optimisation from a start pose; keeps the best pose seen (the loss is not monotone)."""

    def __init__(self, scene: _Scene, cfg: FitConfig, rotation: np.ndarray, translation: np.ndarray) -> None:
        self.scene, self.cfg = scene, cfg
        self.rot6d = matrix_to_rotation_6d(torch.as_tensor(rotation, dtype=torch.float32)).clone().requires_grad_()
        self.trans = torch.as_tensor(translation, dtype=torch.float32).clone().requires_grad_()
        self.scale = torch.tensor(1.0, requires_grad=cfg.optimise_scale)
        groups = [{"params": [self.rot6d], "lr": cfg.lr_rotation}, {"params": [self.trans], "lr": cfg.lr_translation}]
        if cfg.optimise_scale:
            groups.append({"params": [self.scale], "lr": cfg.lr_scale})
        self.optimiser = torch.optim.Adam(groups)
        self.best_loss = float("inf")
        self.last_loss = float("inf")
        self.since_improvement = 0
        self.stopped = False
        self.best = (self.rot6d.detach().clone(), self.trans.detach().clone(), self.scale.detach().clone())
        self.iterations = 0
        self.visibility: torch.Tensor | None = None

    def _sigma(self) -> float:
        """Blur annealed from silhouette_sigma_start to silhouette_sigma over the first half: a wider basin."""
        cfg = self.cfg
        half = max(1, cfg.iterations // 2)
        frac = min(1.0, self.iterations / half)
        return float(cfg.silhouette_sigma_start ** (1 - frac) * cfg.silhouette_sigma**frac)

    def step(self, count: int) -> None:
        cfg = self.cfg
        for _ in range(max(0, count)):
            if self.stopped:
                return
            if self.iterations % max(1, cfg.occlusion_update_every) == 0:
                self.visibility = _visibility(
                    self.scene, rotation_6d_to_matrix(self.rot6d.detach()), self.trans.detach(), self.scale.detach()
                )
            self.optimiser.zero_grad(set_to_none=True)
            sigma = self._sigma()
            losses = _losses(
                self.scene, cfg, rotation_6d_to_matrix(self.rot6d), self.trans, self.scale, self.visibility, sigma
            )
            self.last_loss = float(losses["total"].detach())
            # only poses scored at the final blur compete for "best" (a blurrier loss is not comparable)
            final_blur = sigma <= cfg.silhouette_sigma * 1.0001
            if not final_blur or self.last_loss < self.best_loss:
                if self.last_loss < self.best_loss - cfg.early_stop_tolerance:
                    self.since_improvement = 0
                self.best_loss = self.last_loss if final_blur else float("inf")
                self.best = (self.rot6d.detach().clone(), self.trans.detach().clone(), self.scale.detach().clone())
            self.since_improvement += 1
            if cfg.early_stop_patience > 0 and final_blur and self.since_improvement > cfg.early_stop_patience:
                self.stopped = True
                return
            losses["total"].backward()
            self.optimiser.step()
            self.iterations += 1
            if cfg.optimise_scale:
                with torch.no_grad():
                    self.scale.clamp_(0.2, 5.0)


def _start_poses(
    cfg: FitConfig, obj_v: np.ndarray, obj_f: np.ndarray, centre: np.ndarray, p_obj: np.ndarray,
    hum_v: np.ndarray, hum_f: np.ndarray, p_hum: np.ndarray, mask: np.ndarray, k: np.ndarray,
    init_rotation: np.ndarray | None, init_translation: np.ndarray | None,
) -> tuple[list[tuple[np.ndarray, np.ndarray, str]], dict[str, float]]:
    """(rotation, centre translation, label) start poses: the given/mask-centre pose and its ICP refinement.

    Without a rotation, the 24 axis-aligned rotations are tried (the reference starts from R = I only).
    """
    rotations = [np.asarray(init_rotation, dtype=np.float64)] if init_rotation is not None else _axis_rotations()
    poses: list[tuple[np.ndarray, np.ndarray, str]] = []
    for rot in rotations:
        if init_translation is None:
            depth = contact_region_depth(hum_v, p_hum, cfg.human_contact_threshold)
            poses.append((rot, mask_centre_translation(mask, k, depth), "mask"))
        else:
            poses.append((rot, rot @ centre + np.asarray(init_translation, dtype=np.float64), "given"))
    report = {"icp_iterations": 0.0, "icp_rmse_m": float("nan")}
    obj_sel = p_obj > cfg.object_contact_threshold
    if cfg.icp_iterations <= 0 or obj_sel.sum() < 3:
        return poses, report
    hum_points, hum_normals, hum_p = sample_contact_surface(
        hum_v, hum_f, p_hum, cfg.human_contact_threshold, seed=cfg.seed
    )
    if len(hum_points) < 3:
        return poses, report
    obj_normals = _vertex_normals(obj_v, obj_f)
    refined = []
    for rot, trans, _ in poses:
        icp = contact_icp(
            (obj_v - centre)[obj_sel], obj_normals[obj_sel], hum_points, hum_normals, rot, trans,
            p_obj[obj_sel], hum_p, cfg.icp_iterations, cfg.icp_normal_weight, cfg.icp_max_normal_angle_deg,
        )
        refined.append((icp.rotation, icp.translation, "icp"))
        report = {"icp_iterations": float(icp.iterations), "icp_rmse_m": icp.rmse}
    return poses + refined, report


def _axis_rotations() -> list[np.ndarray]:
    """The 24 rotations of the cube (signed permutation matrices with det +1)."""
    out = []
    for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        for signs in np.array(np.meshgrid([1, -1], [1, -1], [1, -1])).T.reshape(-1, 3):
            mat = np.zeros((3, 3))
            mat[np.arange(3), perm] = signs
            if np.linalg.det(mat) > 0:
                out.append(mat)
    return out


ObjectFitConfig = FitConfig  # the name the pipeline uses


def fit_object_to_body(
    object_vertices: np.ndarray, object_faces: np.ndarray, object_contact: np.ndarray,
    body_vertices: np.ndarray, body_faces: np.ndarray, body_contact: np.ndarray,
    object_mask: np.ndarray, camera_k: np.ndarray, config: FitConfig | None = None,
    init_rotation: np.ndarray | None = None, init_translation: np.ndarray | None = None,
) -> ObjectFitResult:
    """:func:`fit_object` with the pipeline's argument names (the human is the placed SMPL-X body)."""
    return fit_object(
        object_vertices, object_faces, object_contact, body_vertices, body_faces, body_contact, object_mask,
        camera_k, config, init_rotation=init_rotation, init_translation=init_translation,
    )


def _check_mesh(
    name: str, vertices: np.ndarray, faces: np.ndarray, contact: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    p = np.asarray(contact, dtype=np.float64).reshape(-1)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0 or not np.isfinite(v).all():
        raise InvalidInputError(f"{name} vertices must be a finite (N,3) array, got shape {v.shape}")
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
) -> _Scene:
    rng = np.random.default_rng(cfg.seed)
    mesh = trimesh.Trimesh(local, faces, process=False, validate=False)
    # The silhouette mesh may be merged/decimated: it only has to draw the outline.
    sil = trimesh.Trimesh(local.copy(), faces.copy(), process=False, validate=False)
    sil.merge_vertices()
    sil_v, sil_f = decimate_by_clustering(
        np.asarray(sil.vertices), np.asarray(sil.faces), cfg.max_silhouette_faces
    )
    cull = bool(trimesh.Trimesh(sil_v, sil_f, process=False).is_watertight) or encloses_volume(sil_v, sil_f)

    rows, cols = np.nonzero(mask)
    box = (cols.min(), rows.min(), cols.max(), rows.max())
    grid = SilhouetteGrid.around_box(box, mask.shape, cfg.silhouette_resolution, cfg.silhouette_margin)
    if cfg.centroid_target == "mask_centroid":
        target = np.array([cols.mean(), rows.mean()])
    else:
        target = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])

    obj_idx = np.nonzero(p_obj > cfg.object_contact_threshold)[0]
    if len(obj_idx) > cfg.max_object_contact_points:
        obj_idx = np.sort(rng.choice(obj_idx, cfg.max_object_contact_points, replace=False))
    order = np.argsort(-p_hum, kind="stable")[: cfg.max_human_contact_points]
    hum_idx = order[p_hum[order] > 1e-3]

    samples, _ = trimesh.sample.sample_surface(mesh, cfg.penetration_samples, seed=cfg.seed)
    body_normals = _vertex_normals(hum_v, hum_f)
    human_depth = None
    if use_occlusion:
        depth = render_depth([(hum_v, hum_f)], k, mask.shape).depth
        human_depth = grid.downsample_depth(depth)

    def t32(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.array(x), dtype=torch.float32)

    return _Scene(
        local=t32(local), sil_vertices=t32(sil_v), sil_faces=torch.as_tensor(sil_f, dtype=torch.int64),
        sil_edges=EdgeTable.from_faces(sil_f), cull=cull, grid=grid,
        mask=_mask_target(grid, mask, cfg), centroid_target=t32(target), camera_k=t32(k),
        obj_contact_local=t32(local[obj_idx]), obj_contact_p=t32(p_obj[obj_idx]),
        human_contact=t32(hum_v[hum_idx]), human_contact_p=t32(p_hum[hum_idx]),
        samples_local=t32(samples), body_tree=cKDTree(hum_v), body_vertices=t32(hum_v),
        body_normals=t32(body_normals), human_depth=human_depth, occlusion_margin=cfg.occlusion_margin_m,
    )


def _mask_target(grid: SilhouetteGrid, mask: np.ndarray, cfg: FitConfig) -> torch.Tensor:
    if cfg.mask_target == "blurred":
        return grid.blurred_mask(mask, cfg.silhouette_sigma)
    return grid.downsample_mask(mask)


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
    """Cells where the body is in front of the object at this pose are hidden (0); no gradient."""
    if scene.human_depth is None or not torch.isfinite(scene.human_depth).any():
        return None
    verts = (scale * scene.sil_vertices @ rot.T + trans).detach().double().numpy()
    g = scene.grid
    obj_depth = render_depth([(verts, scene.sil_faces.numpy())], _grid_camera(scene), (g.height, g.width))
    obj_depth = obj_depth.depth
    covered = np.isfinite(obj_depth)
    if not covered.any():
        return None
    if not covered.all():  # cells beside the object take the depth of the nearest covered cell
        _, (ri, ci) = ndimage.distance_transform_edt(~covered, return_indices=True)
        obj_depth = obj_depth[ri, ci]
    # a margin keeps the body surface the object rests on from "occluding" the object's own rim
    visible = scene.human_depth.numpy() >= obj_depth - scene.occlusion_margin
    return torch.from_numpy(visible.astype(np.float32))


def _losses(
    scene: _Scene, cfg: FitConfig, rot: torch.Tensor, trans: torch.Tensor, scale: torch.Tensor,
    visibility: torch.Tensor | None, sigma: float | None = None,
) -> dict[str, torch.Tensor]:
    sil_verts = scale * scene.sil_vertices @ rot.T + trans
    sil = soft_silhouette(
        sil_verts, scene.sil_faces, scene.camera_k, scene.grid, sigma or cfg.silhouette_sigma, scene.sil_edges,
        scene.cull, visibility,
    )
    target = scene.mask
    inter = (sil * target).sum()
    union = (sil + target - sil * target).sum().clamp(min=1e-6)
    losses = {"mask": 1.0 - inter / union}
    losses["centroid"] = ((silhouette_centroid(sil, scene.grid) - scene.centroid_target) ** 2).sum()

    if len(scene.obj_contact_local) and len(scene.human_contact):
        obj_c = scale * scene.obj_contact_local @ rot.T + trans
        diff = obj_c[:, None, :] - scene.human_contact[None, :, :]
        dist = (diff.pow(2).sum(-1) + 1e-12).sqrt()
        weights = scene.obj_contact_p[:, None] * scene.human_contact_p[None, :]
        losses["contact"] = (dist * weights).sum() / weights.sum().clamp(min=1e-12)
    else:
        losses["contact"] = trans.sum() * 0.0

    samples = scale * scene.samples_local @ rot.T + trans
    _, nearest = scene.body_tree.query(samples.detach().double().numpy())
    nearest = torch.as_tensor(nearest, dtype=torch.int64)
    signed = ((samples - scene.body_vertices[nearest]) * scene.body_normals[nearest]).sum(-1)
    losses["penetration"] = torch.relu(-signed).mean()

    losses["total"] = (
        cfg.weight_mask * losses["mask"]
        + cfg.weight_centroid * losses["centroid"]
        + cfg.weight_contact * losses["contact"]
        + cfg.weight_penetration * losses["penetration"]
    )
    return losses


def _geometry_report(
    scene: _Scene, vertices: np.ndarray, obj_sel: np.ndarray, p_obj: np.ndarray, hum_v: np.ndarray,
    p_hum: np.ndarray, cfg: FitConfig, rot: torch.Tensor, trans: torch.Tensor, scale: torch.Tensor,
) -> dict[str, float]:
    """Contact distance (object contacts to the nearest human contact, p-weighted) and penetration depth."""
    report = {"contact_distance_m": float("nan")}
    hum_sel = p_hum > cfg.human_contact_threshold
    if obj_sel.any() and hum_sel.any():
        dist, _ = cKDTree(hum_v[hum_sel]).query(vertices[obj_sel].astype(np.float64))
        report["contact_distance_m"] = float((dist * p_obj[obj_sel]).sum() / p_obj[obj_sel].sum())
    with torch.no_grad():
        samples = scale * scene.samples_local @ rot.T + trans
        _, nearest = scene.body_tree.query(samples.double().numpy())
        nearest = torch.as_tensor(nearest, dtype=torch.int64)
        signed = ((samples - scene.body_vertices[nearest]) * scene.body_normals[nearest]).sum(-1)
        vis = _visibility(scene, rot, trans, scale)
        report["mask_iou_soft"] = float(1.0 - _losses(scene, cfg, rot, trans, scale, vis)["mask"])
    report["penetration_depth_m"] = float(torch.relu(-signed).max())
    return report
