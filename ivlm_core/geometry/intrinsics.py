"""Is a pinhole camera matrix K usable for placing bodies and objects?

CameraInfo comes from drivers and calibration files that can be wrong: NaN/inf entries, ``K[2][2] = 0``
(the fit then fails with LinAlgError) or absurd focal lengths (``fx = 1e300`` overflows the pose fit into
"zero norm quaternions"). Such a K must not fail the frame: the contacts are still valid, only placement in
the camera frame is impossible, and the caller reports why.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ivlm_core.errors import InvalidInputError

# No real lens is this long: 1e6 px is a 40 m focal length on a 4 um pixel; anything above overflows the fit.
MAX_FOCAL_PX = 1e6


def camera_k_problem(camera_k: Any) -> str | None:
    """Why ``camera_k`` cannot place anything (None when it is a finite 3x3 K with fx, fy in (0, 1e6] px,
    a finite principal point and a last row of (0, 0, 1))."""
    k = np.asarray(camera_k, dtype=np.float64) if camera_k is not None else None
    if k is None or k.shape != (3, 3):
        return f"K must be 3x3, got shape {None if k is None else k.shape}"
    if not np.isfinite(k).all():
        return f"K has NaN or infinite entries: {k.tolist()}"
    fx, fy = k[0, 0], k[1, 1]
    if not (0.0 < fx <= MAX_FOCAL_PX and 0.0 < fy <= MAX_FOCAL_PX):
        return f"focal lengths must be in (0, {MAX_FOCAL_PX:.0e}] px, got fx={fx:g}, fy={fy:g}"
    if k[2, 2] != 1.0 or k[2, 0] != 0.0 or k[2, 1] != 0.0:
        return f"the last row of K must be [0, 0, 1], got {k[2].tolist()}"
    if abs(k[0, 2]) > 1e7 or abs(k[1, 2]) > 1e7 or abs(k[0, 1]) > MAX_FOCAL_PX:
        return f"principal point / skew out of range: cx={k[0, 2]:g}, cy={k[1, 2]:g}, skew={k[0, 1]:g}"
    return None


def usable_camera_k(camera_k: Any) -> tuple[np.ndarray | None, str]:
    """(K as float64, '') when usable; (None, 'invalid camera_info: <why>') when given but unusable;
    (None, '') when no K was given."""
    if camera_k is None:
        return None, ""
    problem = camera_k_problem(camera_k)
    if problem:
        return None, f"invalid camera_info: {problem}"
    return np.asarray(camera_k, dtype=np.float64), ""


def checked_camera_k(camera_k: Any) -> np.ndarray:
    """K as float64 for code that cannot work without one (the body fit, the tracker); InvalidInputError naming
    the `camera_k_problem` otherwise."""
    problem = camera_k_problem(camera_k)
    if problem:
        raise InvalidInputError(f"camera_k is not a usable intrinsic matrix: {problem}")
    return np.asarray(camera_k, dtype=np.float64)
