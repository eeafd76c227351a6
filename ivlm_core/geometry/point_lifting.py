"""Per-view heat maps -> per-point affordance on a point cloud (the reference `ObjectPCAfford3DPredictor`).

The affordance model is evaluated on PIAD point clouds (2048 points), not meshes: each view's pixel knows at most
one point (`p2pmap_*.npz`, key `mapping`, (H,W) int64, -1 = no point). The reference lifts like this (spec 3.3,
its `forward` evaluation path):
* heat map: the mask logits go through a sigmoid on the *rendered* pixels (non-white in the SAM input render;
  elsewhere the raw logit stays, `affordance_heat_maps`);
* per view, a point gets the mean heat of the pixels mapped to it;
* the result is the mean over the views in which the point got at least one pixel; points seen in no view are 0.
No threshold anywhere. Vectorised torch on the heat maps' device (index_add_ over all views at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.geometry.lifting import _view_average

P2P_KEY = "mapping"
"""The array name inside the reference's `p2pmap_*.npz` files."""
WHITE_SUM = 3 * 255
"""A render pixel summing to this (pure white) is background: the reference keeps its raw logit."""


@dataclass(eq=False)
class PointMaps:
    """Per-view pixel -> point index maps of one point cloud, stacked: mapping (V,H,W) int64, -1 = none."""

    mapping: torch.Tensor
    num_points: int
    source: str = "given arrays"

    def __post_init__(self) -> None:
        mapping = torch.as_tensor(self.mapping)
        if mapping.ndim != 3:
            raise InvalidInputError(f"point maps must be (V, H, W), got shape {tuple(mapping.shape)}.")
        if mapping.dtype.is_floating_point or mapping.dtype == torch.bool:
            raise InvalidInputError(f"point maps must hold integer point indices, got {mapping.dtype}.")
        if int(self.num_points) <= 0:
            raise InvalidInputError(f"num_points must be positive, got {self.num_points}.")
        mapping = mapping.to(torch.int64)
        if mapping.numel() and (int(mapping.min()) < -1 or int(mapping.max()) >= int(self.num_points)):
            raise InvalidInputError(
                f"point maps ({self.source}) hold indices in [{int(mapping.min())}, {int(mapping.max())}] but the "
                f"point cloud has {self.num_points} points (-1 marks pixels without a point)."
            )
        self.mapping = mapping
        self.num_points = int(self.num_points)

    @property
    def num_views(self) -> int:
        return int(self.mapping.shape[0])

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.mapping.shape[1]), int(self.mapping.shape[2])

    def visible_points(self) -> np.ndarray:
        """(N,) bool: points that own at least one pixel in some view."""
        seen = np.zeros(self.num_points, dtype=bool)
        ids = self.mapping[self.mapping >= 0].cpu().numpy()
        seen[ids] = True
        return seen

    @classmethod
    def from_arrays(cls, mappings: Sequence[np.ndarray], num_points: int, source: str = "given arrays") -> PointMaps:
        """Stack per-view (H,W) maps; views must share one resolution."""
        if len(mappings) == 0:
            raise InvalidInputError("need at least one per-view point map.")
        shapes = {np.shape(m) for m in mappings}
        if len(shapes) != 1:
            raise InvalidInputError(f"all per-view point maps must share one (H, W) shape, got {sorted(shapes)}.")
        arrays = [np.asarray(m) for m in mappings]
        bad = [a.dtype for a in arrays if not np.issubdtype(a.dtype, np.integer)]
        if bad:
            raise InvalidInputError(f"point maps must hold integer point indices, got {bad[0]} ({source}).")
        return cls(torch.from_numpy(np.stack([a.astype(np.int64) for a in arrays])), num_points, source)

    @classmethod
    def from_p2pmap_files(cls, paths: Sequence[str | Path], num_points: int) -> PointMaps:
        """The reference's per-view `p2pmap_*.npz` files (key `mapping`), read without unpickling."""
        mappings = []
        for path in map(Path, paths):
            if not path.is_file():
                raise MissingAssetError(
                    "PIAD pixel-to-point map", path,
                    "Unpack the InteractVLM PIAD renders next to the masks, or let ivlm make its own maps "
                    "(`ivlm eval --point-maps ivlm`).",
                )
            try:
                with np.load(path, allow_pickle=False) as data:
                    if P2P_KEY not in data.files:
                        raise InvalidInputError(f"'{path}' has no '{P2P_KEY}' array; it holds {sorted(data.files)}.")
                    mapping = np.asarray(data[P2P_KEY])
            except (ValueError, OSError) as err:  # object arrays, truncated or non-npz files
                if isinstance(err, InvalidInputError):
                    raise
                raise InvalidInputError(f"cannot read pixel-to-point map '{path}' as a plain npz: {err}") from err
            if mapping.ndim != 2:
                raise InvalidInputError(f"'{path}': '{P2P_KEY}' must be (H, W), got shape {mapping.shape}.")
            mappings.append(mapping)
        return cls.from_arrays(mappings, num_points, f"p2pmap files in {Path(paths[0]).parent}")


def affordance_heat_maps(logits: torch.Tensor, renders: np.ndarray) -> torch.Tensor:
    """(V,H,W) mask logits -> heat maps as the reference's forward path makes them: sigmoid on the pixels that
    are not pure white in the SAM input renders (V,H,W,3) uint8, the raw logit left elsewhere."""
    logits = torch.as_tensor(logits).to(torch.float32)
    renders = np.asarray(renders)
    if renders.ndim != 4 or renders.shape[-1] != 3 or tuple(renders.shape[:3]) != tuple(logits.shape):
        raise InvalidInputError(
            f"renders {renders.shape} must be (V,H,W,3) at the logits' (V,H,W) {tuple(logits.shape)}."
        )
    rendered = torch.from_numpy(renders.astype(np.int32).sum(axis=-1) < WHITE_SUM).to(logits.device)
    return torch.where(rendered, logits.sigmoid(), logits)


def lift_point_heat(heat: torch.Tensor | np.ndarray, maps: PointMaps) -> torch.Tensor:
    """Heat maps (V,H,W) or (B,V,H,W) -> (B, N) float32 per-point affordance (reference point-cloud lifting)."""
    heat = torch.as_tensor(heat)
    if heat.ndim == 3:
        heat = heat.unsqueeze(0)
    if heat.ndim != 4:
        raise InvalidInputError(f"heat maps must be (V, H, W) or (B, V, H, W), got shape {tuple(heat.shape)}.")
    batch, views, height, width = heat.shape
    if views != maps.num_views or (height, width) != maps.resolution:
        raise InvalidInputError(
            f"heat maps are {views} views of {height}x{width} but the point maps are {maps.num_views} views of "
            f"{maps.resolution[0]}x{maps.resolution[1]}."
        )
    n = maps.num_points
    flat = heat.to(torch.float32).reshape(batch, -1)
    mapping = maps.mapping.to(flat.device).reshape(-1)
    pixel = torch.nonzero(mapping >= 0).squeeze(1)
    view = torch.div(pixel, height * width, rounding_mode="floor")
    slots = mapping[pixel] + view * n
    votes = flat.new_zeros(batch, views * n).index_add_(1, slots, flat[:, pixel])
    counts = flat.new_zeros(views * n).index_add_(0, slots, torch.ones_like(slots, dtype=torch.float32))
    return _view_average(votes, counts, batch, views, n)


__all__ = ["P2P_KEY", "PointMaps", "affordance_heat_maps", "lift_point_heat"]
