"""Hard z-buffer rendering of several camera-frame meshes at once with pinhole intrinsics K (OpenCV camera
frame, metres), reporting which mesh is visible where.

Used for ground-truth masks/depth in the synthetic benchmark, for the human occluder depth in the fit, and for
the overlay PNG. The rasterisation itself is `ivlm_core.geometry.raster.rasterize_pinhole` (the kernel shared
with the model's renders); this module only merges the meshes and splits the face ids back per mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ivlm_core.errors import InvalidInputError
from ivlm_core.geometry.raster import rasterize_pinhole


@dataclass
class DepthRender:
    depth: np.ndarray  # (H,W) float32, metres along z; inf on background
    face_index: np.ndarray  # (H,W) int64, -1 on background
    mesh_index: np.ndarray  # (H,W) int64, which of the rendered meshes is visible, -1 on background

    @property
    def mask(self) -> np.ndarray:
        return self.face_index >= 0


def render_depth(
    meshes: list[tuple[np.ndarray, np.ndarray]], camera_k: np.ndarray, image_hw: tuple[int, int]
) -> DepthRender:
    """Z-buffer several camera-frame meshes together; face_index is the face within the visible mesh.

    Pixel centres exactly on an edge count as inside (closed meshes render without cracks); faces with a
    corner at z <= 1e-4 m are not drawn.
    """
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
    if offsets[-1] == 0:  # nothing to draw: an empty render rather than an error
        return DepthRender(
            np.full((height, width), np.inf, dtype=np.float32),
            np.full((height, width), -1, dtype=np.int64),
            np.full((height, width), -1, dtype=np.int64),
        )
    frag = rasterize_pinhole(np.concatenate(vertices), np.concatenate(faces), camera_k, (height, width))
    # Per-face lookup tables with a trailing -1, so that the background id -1 maps to -1.
    counts = np.diff(offsets)
    face_mesh = np.append(np.repeat(np.arange(len(counts)), counts), -1)
    face_local = np.append(np.arange(offsets[-1]) - np.repeat(offsets[:-1], counts), -1)
    fbuf = frag.face_index
    depth = np.where(fbuf >= 0, frag.depth, np.float32(np.inf))
    return DepthRender(depth, face_local[fbuf], face_mesh[fbuf])
