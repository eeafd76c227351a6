"""The InteractVLM multi-view camera sets and the exact PyTorch3D camera convention they were rendered with.

The reference renders its views with PyTorch3D and the SAM decoder is conditioned on the normalised camera
parameters, so both the view order and the projection must match PyTorch3D to the pixel. The facts below were
checked against facebookresearch/pytorch3d (`renderer/cameras.py`,
`csrc/rasterize_meshes/rasterize_meshes.cu`):

* Camera centre (`camera_position_from_spherical_angles`, degrees):
  ``C = dist * (cos(elev) sin(azim), sin(elev), cos(elev) cos(azim))``.
* Look-at rotation (`look_at_rotation`, at = origin, up = (0, 1, 0)):
  ``z = normalize(at - C)``, ``x = normalize(up x z)``, ``y = normalize(z x x)``; ``R`` has x, y, z as its
  COLUMNS, and ``T = -R^T C`` (`look_at_view_transform`). Points map row-vector style:
  ``X_cam = X_world @ R + T``. The reference then shifts the image with ``T[0] += x_off; T[1] += y_off``.
* `FoVPerspectiveCameras` defaults (fov 60 deg, znear 1, zfar 100, aspect 1):
  ``x_ndc = s * x_cam / z_cam``, ``y_ndc = s * y_cam / z_cam`` with ``s = 1 / tan(fov / 2)``. The rasterizer
  keeps the view-space ``z_cam`` as depth.
* NDC is +X left, +Y up. Pixel (row i, col j) of an HxW image has its centre at
  ``x_ndc = 1 - (2j + 1) / W``, ``y_ndc = 1 - (2i + 1) / H`` (the kernel flips both axes of `PixToNdc`).

Our continuous pixel coordinates put pixel centres on integers: ``col = ((1 - x_ndc) * W - 1) / 2``,
``row = ((1 - y_ndc) * H - 1) / 2``, so ``round(col), round(row)`` is the pixel a point falls in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ivlm_core.errors import InvalidInputError

FOV_DEG = 60.0
ZNEAR = 1.0
ZFAR = 100.0
OBJECT_MESH_RENDER_DIST = 1.5
"""The object demo renders meshes at distance 1.5 although the camera encoder is fed the dist-2.0 params."""


@dataclass(frozen=True)
class CameraView:
    """One look-at camera of a reference view set: (dist, elevation deg, azimuth deg, x/y image offsets)."""

    name: str
    dist: float
    elev: float
    azim: float
    x_off: float = 0.0
    y_off: float = 0.0

    def normalized(self) -> np.ndarray:
        """The 5-vector the camera encoder sees: [d/10, e/360, a/360, (x+1)/2, (y+1)/2]."""
        return np.array(
            [
                self.dist / 10.0,
                self.elev / 360.0,
                self.azim / 360.0,
                (self.x_off + 1.0) / 2.0,
                (self.y_off + 1.0) / 2.0,
            ],
            dtype=np.float32,
        )


_HUMAN_VITRUVIAN = (
    CameraView("topfront", 2.0, 45.0, 315.0, 0.0, 0.0),
    CameraView("bottomfront", 2.0, 315.0, 315.0, 0.0, 0.3),
    CameraView("topback", 2.0, 45.0, 135.0, 0.0, 0.0),
    CameraView("bottomback", 2.0, 315.0, 135.0, 0.0, 0.3),
)
_OBJECT_HM = (
    CameraView("frontleft", 2.0, 45.0, 315.0, 0.0, 0.0),
    CameraView("frontright", 2.0, 45.0, 45.0, 0.0, 0.0),
    CameraView("backleft", 2.0, 330.0, 135.0, 0.0, 0.0),
    CameraView("backright", 2.0, 330.0, 225.0, 0.0, 0.0),
)

VIEW_SETS: dict[str, tuple[CameraView, ...]] = {
    "4MV-Z_Vitru": _HUMAN_VITRUVIAN,
    "4MV-Z_Vitru_mv2": _HUMAN_VITRUVIAN,
    "4MV-Z_Vitru_FootGround": _HUMAN_VITRUVIAN,
    "4MV-Z_Vitru_wScene": _HUMAN_VITRUVIAN,  # old name of _FootGround, still found in released configs
    "4MV-Z_HM": _OBJECT_HM,
    "4MV-Z_HM_BM": _OBJECT_HM,
}


def get_view_set(name: str, dist: float | None = None) -> tuple[CameraView, ...]:
    """The ordered views of a reference view set; `dist` overrides the distance (1.5: object mesh renders)."""
    if name not in VIEW_SETS:
        raise InvalidInputError(f"Unknown view set '{name}'. Known view sets: {sorted(VIEW_SETS)}.")
    views = VIEW_SETS[name]
    if dist is None:
        return views
    if not math.isfinite(dist) or dist <= 0:
        raise InvalidInputError(f"Camera distance must be a positive finite number, got {dist}.")
    return tuple(replace(v, dist=float(dist)) for v in views)


def cam_params_tensor(views: tuple[CameraView, ...] | list[CameraView]) -> np.ndarray:
    """(V, 5) float32 normalised camera parameters in view order, as fed to the camera encoder."""
    if len(views) == 0:
        raise InvalidInputError("cam_params_tensor needs at least one view.")
    return np.stack([v.normalized() for v in views]).astype(np.float32)


def camera_center(view: CameraView) -> np.ndarray:
    """World position of the look-at eye (before the x/y offsets), PyTorch3D spherical convention."""
    elev, azim = math.radians(view.elev), math.radians(view.azim)
    return view.dist * np.array(
        [math.cos(elev) * math.sin(azim), math.sin(elev), math.cos(elev) * math.cos(azim)], dtype=np.float64
    )


def view_transform(view: CameraView) -> tuple[np.ndarray, np.ndarray]:
    """(R (3,3), T (3,)) float64 with X_cam = X_world @ R + T, including the reference's T[0:2] offsets."""
    eye = camera_center(view)
    dist = float(np.linalg.norm(eye))
    if not math.isfinite(dist) or dist < 1e-5:
        raise InvalidInputError(f"View '{view.name}' has camera distance {view.dist}; it must be positive.")
    z_axis = -eye / dist
    x_axis = np.cross([0.0, 1.0, 0.0], z_axis)
    if np.linalg.norm(x_axis) < 1e-5:
        # PyTorch3D returns a degenerate matrix here; refuse instead of rendering garbage.
        raise InvalidInputError(
            f"View '{view.name}' looks straight along the up axis (elev {view.elev} deg); the look-at "
            "rotation is undefined. Use an elevation other than +-90 deg."
        )
    x_axis = x_axis / np.linalg.norm(x_axis)
    y_axis = np.cross(z_axis, x_axis)
    y_axis = y_axis / np.linalg.norm(y_axis)
    rot = np.stack([x_axis, y_axis, z_axis], axis=1)
    trans = -rot.T @ eye
    trans[0] += view.x_off
    trans[1] += view.y_off
    return rot, trans


def camera_position(view: CameraView) -> np.ndarray:
    """Optical centre in world space after the offsets (what PyTorch3D's get_camera_center returns)."""
    rot, trans = view_transform(view)
    return -rot @ trans


def focal_scale() -> float:
    """NDC focal scale s = 1 / tan(fov/2) of the default FoVPerspectiveCameras."""
    return 1.0 / math.tan(math.radians(FOV_DEG) / 2.0)


def world_to_ndc(points: np.ndarray, view: CameraView) -> np.ndarray:
    """(N, 3) float64 of (x_ndc, y_ndc, z_cam): the vertex form the PyTorch3D rasterizer works on."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InvalidInputError(f"Points must have shape (N, 3), got {pts.shape}.")
    rot, trans = view_transform(view)
    cam = pts @ rot + trans
    z = cam[:, 2]
    s = focal_scale()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.stack([s * cam[:, 0] / z, s * cam[:, 1] / z, z], axis=1)
    return out


def ndc_to_pixel(x_ndc: np.ndarray, y_ndc: np.ndarray, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous (col, row) with pixel centres on integers for a square image."""
    col = ((1.0 - x_ndc) * image_size - 1.0) / 2.0
    row = ((1.0 - y_ndc) * image_size - 1.0) / 2.0
    return col, row


def pixel_centers_ndc(image_size: int) -> np.ndarray:
    """(image_size,) NDC coordinate of the pixel centres along one axis (index 0 = +1 side)."""
    idx = np.arange(image_size, dtype=np.float64)
    return 1.0 - (2.0 * idx + 1.0) / image_size


def project_points(points: np.ndarray, view: CameraView, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Project world points: (pixels (N,2) [col, row], integers at pixel centres; depth (N,) = z_cam).

    Points with depth <= 0 are behind the camera; their pixel coordinates are meaningless (inf/NaN at 0).
    """
    if image_size <= 0:
        raise InvalidInputError(f"image_size must be positive, got {image_size}.")
    ndc = world_to_ndc(points, view)
    col, row = ndc_to_pixel(ndc[:, 0], ndc[:, 1], image_size)
    return np.stack([col, row], axis=1), ndc[:, 2].copy()
