"""2D multi-view mask logits -> per-vertex contact, with the exact semantics of the reference predictors.

Each view's pixel knows the 3 vertices of the face rasterized there and their barycentric weights. A pixel is
used only when all three ids lie in [0, N) (so the reference's -1 background and stray ids drop the whole
pixel).
Three rules exist because released checkpoints were trained with different ones (spec section 3):
* `lift_human_soft` (current `HumanContact3DPredictor`): p = sigmoid(clamp(logit, -20, 20)); per view a
  vertex gets sum(w p) / sum(w) over all valid pixels of its faces; the result averages the views where the
  vertex got weight, then clamps to [0, 1].
* `lift_human_legacy` (pre-FIX predictor): pixels with logit > 0.3 add w and 1 to a sum and a count pooled
  over all views; output is 1.0 where sum / count > 0.3.
* `lift_object_mesh` (`ObjectMeshContact3DPredictor` inference): p = sigmoid(logit) with no clamp; only pixels
  with p > 0.3 vote, per-view normalisation and view averaging as the soft rule, no final clamp.
Everything is vectorised torch (index_add_ over all views at once) and runs on the logits' device; the valid
pixel lists are computed once per maps object and device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.geometry.views import get_view_set

if TYPE_CHECKING:  # the rasterizer needs numba; lifting precomputed maps does not
    from ivlm_core.geometry.raster import Fragments

LOGIT_CLAMP = 20.0
SMPLH_NUM_VERTICES = 6890
HUMAN_MAP_FOLDERS = {
    "4MV-Z_Vitru": "hcontact_vitruvian",
    "4MV-Z_Vitru_FootGround": "hcontact_vitruvian",
    "4MV-Z_Vitru_wScene": "hcontact_vitruvian",
    "4MV-Z_Vitru_mv2": "hcontact_vitruvian_mv2",
}
"""Reference data sub-folder per human view set; `_mv2` has the same geometry, so either folder serves."""
OBJECT_PROB_THRESHOLD = 0.3
LEGACY_LOGIT_THRESHOLD = 0.3
LEGACY_AVG_THRESHOLD = 0.3


@dataclass
class _ValidPixels:
    """Valid pixels of all views, flattened view-major then row-major (the reference's summation order)."""

    pixel: torch.Tensor  # (P,) index into V*H*W
    ids: torch.Tensor  # (P, 3) vertex ids
    view_ids: torch.Tensor  # (P, 3) vertex id + view * N, index into V*N
    weights: torch.Tensor  # (P, 3) float32


@dataclass(eq=False)
class LiftingMaps:
    """Per-view pixel -> (3 vertex ids, 3 barycentric weights) maps of one mesh, stacked over views.

    pixel_to_vertex (V,H,W,3) int64 with -1 on background; bary (V,H,W,3) float32; num_vertices N.
    """

    pixel_to_vertex: torch.Tensor
    bary: torch.Tensor
    num_vertices: int
    _cache: dict[str, _ValidPixels] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        p2v = torch.as_tensor(self.pixel_to_vertex)
        bary = torch.as_tensor(self.bary)
        if p2v.ndim != 4 or p2v.shape[-1] != 3:
            raise InvalidInputError(f"pixel_to_vertex must have shape (V, H, W, 3), got {tuple(p2v.shape)}.")
        if tuple(bary.shape) != tuple(p2v.shape):
            raise InvalidInputError(
                f"bary shape {tuple(bary.shape)} does not match pixel_to_vertex shape {tuple(p2v.shape)}."
            )
        if p2v.dtype.is_floating_point or p2v.dtype == torch.bool:
            raise InvalidInputError(f"pixel_to_vertex must hold integer vertex ids, got {p2v.dtype}.")
        if int(self.num_vertices) <= 0:
            raise InvalidInputError(f"num_vertices must be positive, got {self.num_vertices}.")
        self.pixel_to_vertex = p2v.to(torch.int64)
        self.bary = bary.to(device=p2v.device, dtype=torch.float32)
        self.num_vertices = int(self.num_vertices)

    @property
    def num_views(self) -> int:
        return int(self.pixel_to_vertex.shape[0])

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.pixel_to_vertex.shape[1]), int(self.pixel_to_vertex.shape[2])

    @property
    def device(self) -> torch.device:
        return self.pixel_to_vertex.device

    def to(self, device: torch.device | str) -> LiftingMaps:
        """Same maps on another device (self when already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return LiftingMaps(self.pixel_to_vertex.to(device), self.bary.to(device), self.num_vertices)

    def valid_pixels(self, device: torch.device | str | None = None) -> _ValidPixels:
        """The usable pixels (all three ids in [0, N)) on `device`, computed once and cached."""
        device = self.device if device is None else torch.device(device)
        key = str(device)
        if key not in self._cache:
            p2v = self.pixel_to_vertex.to(device).reshape(-1, 3)
            bary = self.bary.to(device).reshape(-1, 3)
            ok = ((p2v >= 0) & (p2v < self.num_vertices)).all(dim=1)
            pixel = torch.nonzero(ok).squeeze(1)
            ids = p2v[pixel]
            height, width = self.resolution
            view = torch.div(pixel, height * width, rounding_mode="floor")
            self._cache[key] = _ValidPixels(pixel, ids, ids + view[:, None] * self.num_vertices, bary[pixel])
        return self._cache[key]

    @classmethod
    def from_arrays(
        cls, pixel_to_vertex: Sequence[np.ndarray], bary: Sequence[np.ndarray], num_vertices: int
    ) -> LiftingMaps:
        """Stack per-view (H,W,3) arrays; views must share one resolution."""
        if len(pixel_to_vertex) == 0 or len(pixel_to_vertex) != len(bary):
            raise InvalidInputError(
                f"Need the same, non-zero number of pixel_to_vertex ({len(pixel_to_vertex)}) and bary "
                f"({len(bary)}) maps."
            )
        shapes = {np.shape(m) for m in pixel_to_vertex} | {np.shape(m) for m in bary}
        if len(shapes) != 1:
            raise InvalidInputError(
                f"All per-view maps must share one (H, W, 3) shape, got {sorted(shapes)}."
            )
        p2v = torch.from_numpy(np.stack([np.asarray(m, dtype=np.int64) for m in pixel_to_vertex]))
        weights = torch.from_numpy(np.stack([np.asarray(m, dtype=np.float32) for m in bary]))
        return cls(p2v, weights, num_vertices)

    @classmethod
    def from_fragments(cls, frags: Sequence[Fragments], num_vertices: int) -> LiftingMaps:
        """Maps from our own rasterizer, one Fragments per view in view order."""
        return cls.from_arrays([f.pixel_to_vertex for f in frags], [f.bary for f in frags], num_vertices)

    @classmethod
    def from_reference_npz(
        cls, p2v_npz: str | Path, bary_npz: str | Path, view_names: Sequence[str], num_vertices: int
    ) -> LiftingMaps:
        """The reference's `pixel_to_vertex_map_1024.npz` + `bary_coords_map_1024.npz`, keyed by view."""
        p2v = _load_npz_views(Path(p2v_npz), view_names, "pixel-to-vertex map")
        bary = _load_npz_views(Path(bary_npz), view_names, "barycentric map")
        return cls.from_arrays(p2v, bary, num_vertices)

    @classmethod
    def from_reference_folder(
        cls, folder: str | Path, view_names: Sequence[str], num_vertices: int = 6890, resolution: int = 1024
    ) -> LiftingMaps:
        """A reference data folder such as `data/hcontact_vitruvian/` (SMPL-H maps, 6890 vertices)."""
        folder = Path(folder)
        return cls.from_reference_npz(
            folder / f"pixel_to_vertex_map_{resolution}.npz",
            folder / f"bary_coords_map_{resolution}.npz",
            view_names,
            num_vertices,
        )

    @classmethod
    def for_human_view_set(
        cls, data_dir: str | Path, view_set: str = "4MV-Z_Vitru", resolution: int = 1024
    ) -> LiftingMaps:
        """SMPL-H maps of a human view set from the reference `data/` folder, in that set's view order.

        The `_mv2` set reads `hcontact_vitruvian_mv2/` like the reference and falls back to
        `hcontact_vitruvian/` (identical geometry) when only that one was unpacked, and vice versa.
        """
        if view_set not in HUMAN_MAP_FOLDERS:
            raise InvalidInputError(
                f"'{view_set}' is not a human view set; expected one of {sorted(HUMAN_MAP_FOLDERS)}."
            )
        data_dir = Path(data_dir)
        preferred = HUMAN_MAP_FOLDERS[view_set]
        candidates = [preferred, *sorted(set(HUMAN_MAP_FOLDERS.values()) - {preferred})]
        marker = f"pixel_to_vertex_map_{resolution}.npz"
        folder = next(
            (data_dir / c for c in candidates if (data_dir / c / marker).is_file()), data_dir / preferred
        )
        names = [view.name for view in get_view_set(view_set)]
        return cls.from_reference_folder(folder, names, SMPLH_NUM_VERTICES, resolution)

    def to_lift2d_dict(self) -> dict:
        """The `lift2d_dict.pkl` content of the object demo (lists of per-view numpy arrays)."""
        return {
            "pixel_to_vertices_map": [m.cpu().numpy() for m in self.pixel_to_vertex],
            "bary_coords_map": [m.cpu().numpy() for m in self.bary],
            "num_vertices": self.num_vertices,
        }

    def save_lift2d_pkl(self, path: str | Path) -> Path:
        """Write `to_lift2d_dict()` with joblib, the format the reference object lifter reads."""
        import joblib

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.to_lift2d_dict(), path)
        return path

    @classmethod
    def from_lift2d_pkl(cls, path: str | Path) -> LiftingMaps:
        """The object demo's joblib `lift2d_dict.pkl` ({'pixel_to_vertices_map', 'bary_coords_map', ...}),
        read with an allow-listed unpickler (arrays and containers only; the file cannot run code)."""
        from ivlm_core.safe_pickle import load_data_pickle

        path = Path(path)
        data = load_data_pickle(
            path,
            "Object lifting maps (lift2d_dict.pkl)",
            "Render the object mesh first (it writes the maps next to the renders) or pass the right path.",
        )
        needed = ("pixel_to_vertices_map", "bary_coords_map", "num_vertices")
        if not isinstance(data, dict) or any(k not in data for k in needed):
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise InvalidInputError(f"'{path}' must be a dict with keys {needed}; found {found}.")
        return cls.from_arrays(
            data["pixel_to_vertices_map"], data["bary_coords_map"], int(data["num_vertices"])
        )


def _load_npz_views(path: Path, view_names: Sequence[str], what: str) -> list[np.ndarray]:
    if not path.is_file():
        raise MissingAssetError(
            f"Reference {what}",
            path,
            "Unpack the InteractVLM data.zip so that the data/hcontact_vitruvian*/ folders exist, or pass "
            "the folder explicitly.",
        )
    with np.load(path) as npz:
        missing = [name for name in view_names if name not in npz.files]
        if missing:
            raise InvalidInputError(f"'{path}' has no views {missing}; it holds {sorted(npz.files)}.")
        return [np.asarray(npz[name]) for name in view_names]


def _logits_and_maps(logits: torch.Tensor, maps: LiftingMaps) -> tuple[torch.Tensor, _ValidPixels]:
    """Validate shapes; return fp32 logits (B, V*H*W) and the maps' valid pixels on the logits' device."""
    if not isinstance(logits, torch.Tensor):
        logits = torch.as_tensor(np.asarray(logits))
    if logits.ndim == 3:
        logits = logits.unsqueeze(0)
    if logits.ndim != 4:
        raise InvalidInputError(f"Logits must be (V, H, W) or (B, V, H, W), got shape {tuple(logits.shape)}.")
    batch, views, height, width = logits.shape
    if views != maps.num_views:
        raise InvalidInputError(f"Logits have {views} views but the lifting maps have {maps.num_views}.")
    if (height, width) != maps.resolution:
        raise InvalidInputError(
            f"Logits are {height}x{width} but the lifting maps are "
            f"{maps.resolution[0]}x{maps.resolution[1]}; "
            "upsample the masks to the map resolution first (the reference uses 1024x1024)."
        )
    flat = logits.to(torch.float32).reshape(batch, views * height * width)
    return flat, maps.valid_pixels(logits.device)


def _view_average(votes: torch.Tensor, weight: torch.Tensor, batch: int, views: int, n: int) -> torch.Tensor:
    """Per-view vote/weight where weight > 0, averaged over the views with weight; (B, N)."""
    votes = votes.reshape(batch, views, n)
    weight = weight.reshape(-1, views, n)
    seen = weight > 0
    view_prob = torch.where(seen, votes / torch.where(seen, weight, torch.ones_like(weight)), 0.0)
    total = view_prob.sum(dim=1)
    n_views = seen.sum(dim=1).to(torch.float32)
    return torch.where(n_views > 0, total / n_views.clamp(min=1.0), 0.0)


def lift_human_soft(logits: torch.Tensor, maps: LiftingMaps) -> torch.Tensor:
    """Current reference human lifting (no threshold inside); (B, N) float32 in [0, 1]."""
    flat, valid = _logits_and_maps(logits, maps)
    batch, n, views = flat.shape[0], maps.num_vertices, maps.num_views
    prob = flat.clamp(-LOGIT_CLAMP, LOGIT_CLAMP).sigmoid()[:, valid.pixel]
    slots = valid.view_ids.reshape(-1)
    votes = flat.new_zeros(batch, views * n).index_add_(
        1, slots, (prob[:, :, None] * valid.weights).reshape(batch, -1)
    )
    weight = flat.new_zeros(views * n).index_add_(0, slots, valid.weights.reshape(-1))
    return _view_average(votes, weight, batch, views, n).clamp(0.0, 1.0)


def lift_human_legacy(logits: torch.Tensor, maps: LiftingMaps) -> torch.Tensor:
    """Pre-FIX reference human lifting; (B, N) float32 of exactly 0.0 / 1.0."""
    flat, valid = _logits_and_maps(logits, maps)
    batch, n = flat.shape[0], maps.num_vertices
    keep = (flat[:, valid.pixel] > LEGACY_LOGIT_THRESHOLD).to(torch.float32)
    slots = valid.ids.reshape(-1)
    sums = flat.new_zeros(batch, n).index_add_(
        1, slots, (keep[:, :, None] * valid.weights).reshape(batch, -1)
    )
    counts = flat.new_zeros(batch, n).index_add_(1, slots, keep.repeat_interleave(3, dim=1))
    avg = torch.where(counts > 0, sums / counts.clamp(min=1.0), 0.0)
    return (avg > LEGACY_AVG_THRESHOLD).to(torch.float32)


def lift_object_mesh(logits: torch.Tensor, maps: LiftingMaps) -> torch.Tensor:
    """Reference object-mesh lifting (only p > 0.3 votes); (B, N) float32, 0 or >= 0.3."""
    flat, valid = _logits_and_maps(logits, maps)
    batch, n, views = flat.shape[0], maps.num_vertices, maps.num_views
    prob = flat.sigmoid()[:, valid.pixel]
    selected_weights = (prob > OBJECT_PROB_THRESHOLD).to(torch.float32)[:, :, None] * valid.weights
    slots = valid.view_ids.reshape(-1)
    votes = flat.new_zeros(batch, views * n).index_add_(
        1, slots, (prob[:, :, None] * selected_weights).reshape(batch, -1)
    )
    weight = flat.new_zeros(batch, views * n).index_add_(1, slots, selected_weights.reshape(batch, -1))
    return _view_average(votes, weight, batch, views, n)
