"""Hard z-buffer rasterisation of triangle meshes with pinhole intrinsics K (OpenCV camera frame, metres).

Used for ground-truth masks/depth in the synthetic benchmark, for the human occluder depth in the fit, and for
the overlay PNG. The geometry package's rasteriser works with the reference's orbit views, not with a real
camera's K, hence this small numba kernel (pixel centres at integer coordinates, perspective-correct depth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ivlm_core.errors import InvalidInputError


@dataclass
class DepthRender:
    depth: np.ndarray  # (H,W) float32, metres along z; inf on background
    face_index: np.ndarray  # (H,W) int64, -1 on background
    mesh_index: np.ndarray  # (H,W) int64, which of the rendered meshes is visible, -1 on background

    @property
    def mask(self) -> np.ndarray:
        return self.face_index >= 0


@numba.njit(cache=True)
def _raster(pix, depth_v, faces, height, width, zbuf, fbuf):  # pragma: no cover - compiled
    for f in range(faces.shape[0]):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        z0, z1, z2 = depth_v[i0], depth_v[i1], depth_v[i2]
        if z0 <= 1e-4 or z1 <= 1e-4 or z2 <= 1e-4:
            continue
        x0, y0 = pix[i0, 0], pix[i0, 1]
        x1, y1 = pix[i1, 0], pix[i1, 1]
        x2, y2 = pix[i2, 0], pix[i2, 1]
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if abs(area) < 1e-12:
            continue
        cmin = max(int(np.ceil(min(x0, min(x1, x2)))), 0)
        cmax = min(int(np.floor(max(x0, max(x1, x2)))), width - 1)
        rmin = max(int(np.ceil(min(y0, min(y1, y2)))), 0)
        rmax = min(int(np.floor(max(y0, max(y1, y2)))), height - 1)
        for r in range(rmin, rmax + 1):
            for c in range(cmin, cmax + 1):
                w0 = ((x1 - c) * (y2 - r) - (y1 - r) * (x2 - c)) / area
                w1 = ((x2 - c) * (y0 - r) - (y2 - r) * (x0 - c)) / area
                w2 = 1.0 - w0 - w1
                if w0 < 0 or w1 < 0 or w2 < 0:
                    continue
                z = 1.0 / (w0 / z0 + w1 / z1 + w2 / z2)
                if z < zbuf[r, c]:
                    zbuf[r, c] = z
                    fbuf[r, c] = f


def render_depth(
    meshes: list[tuple[np.ndarray, np.ndarray]], camera_k: np.ndarray, image_hw: tuple[int, int]
) -> DepthRender:
    """Z-buffer several camera-frame meshes together; face_index is the face within the visible mesh."""
    height, width = int(image_hw[0]), int(image_hw[1])
    camera_k = np.asarray(camera_k, dtype=np.float64)
    if camera_k.shape != (3, 3):
        raise InvalidInputError(f"camera K must be 3x3, got shape {camera_k.shape}")
    vertices, faces, offsets = [], [], [0]
    base = 0
    for verts, tris in meshes:
        verts = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
        vertices.append(verts)
        faces.append(np.asarray(tris, dtype=np.int64).reshape(-1, 3) + base)
        base += len(verts)
        offsets.append(offsets[-1] + len(faces[-1]))
    all_v = np.concatenate(vertices) if vertices else np.zeros((0, 3))
    all_f = np.concatenate(faces) if faces else np.zeros((0, 3), dtype=np.int64)
    z = all_v[:, 2]
    safe_z = np.where(z > 1e-4, z, 1.0)
    u = camera_k[0, 0] * all_v[:, 0] / safe_z + camera_k[0, 2]
    v = camera_k[1, 1] * all_v[:, 1] / safe_z + camera_k[1, 2]
    pix = np.stack((u, v), axis=-1)
    zbuf = np.full((height, width), np.inf)
    fbuf = np.full((height, width), -1, dtype=np.int64)
    _raster(pix, z, all_f, height, width, zbuf, fbuf)
    offsets_arr = np.asarray(offsets)
    mesh_index = np.where(fbuf >= 0, np.searchsorted(offsets_arr, fbuf, side="right") - 1, -1)
    local_face = np.where(fbuf >= 0, fbuf - offsets_arr[np.clip(mesh_index, 0, None)], -1)
    return DepthRender(zbuf.astype(np.float32), local_face, mesh_index)
