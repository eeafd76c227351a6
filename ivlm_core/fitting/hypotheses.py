"""Start rotations for placing an object without a start pose (object frame -> camera frame).

One start pose is not enough: the contact-guided ICP from a single rotation lands in the wrong basin for
about a third of the scenes (flipped, rolled about the contact). The fit therefore starts from several
rotations that the evidence suggests, refines them all (batched) and keeps the best by the full loss:

* ``contact``: the object's contact patch faces the body's contact patch (its mean normal turned onto the
  opposite of the body's), rolled about that normal in 8 steps; when the body's contacts form several regions
  (two hands), also each region's alone: the mean normal of two palms facing each other faces neither;
* ``axes``: the object's longest principal axis along the mask's longest axis in the image (either way
  round), rolled about it in 4 steps;
* ``grid``: the 24 rotations of the cube in the object's principal frame, a coarse cover of SO(3) for
  objects with no clear axis.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ivlm_core.fitting.symmetry import turn


def start_rotations(
    object_local: np.ndarray, object_normals: np.ndarray, object_contact: np.ndarray, threshold: float,
    human_normals: np.ndarray, human_weights: np.ndarray, mask: np.ndarray,
    contact_rolls: int = 8, axis_rolls: int = 4, human_regions: np.ndarray | None = None,
) -> list[tuple[np.ndarray, str]]:
    """(rotation, family) candidates; object_local is centred, human_normals are the body contact normals.
    human_regions: optional (N,) region label of each body contact (several: each region's contact family too;
    a negative label: the contact counts only in the family of all)."""
    out: list[tuple[np.ndarray, str]] = []
    n_obj = _contact_normal(object_local, object_normals, object_contact, threshold)
    weighted = np.asarray(human_weights, float)[:, None] * np.asarray(human_normals, float)
    regions = [] if human_regions is None else [r for r in np.unique(human_regions) if r >= 0]
    groups = [np.ones(len(weighted), dtype=bool)]
    if len(regions) > 1:
        groups += [np.asarray(human_regions) == r for r in regions]
    for group in groups:
        n_hum = _unit(weighted[group].sum(0))
        if n_obj is None or n_hum is None:
            continue
        base = _align(n_obj, -n_hum)
        for step in range(contact_rolls):
            out.append((turn(n_hum, 2 * np.pi * step / contact_rolls) @ base, "contact"))
    frame = _principal_frame(object_local)
    direction = _mask_axis(mask)
    if direction is not None:
        for sign in (1.0, -1.0):
            base = _align(sign * frame[:, 0], direction)
            for step in range(axis_rolls):
                out.append((turn(direction, 2 * np.pi * step / axis_rolls) @ base, "axes"))
    out.extend((g @ frame.T, "grid") for g in cube_rotations())
    return out


def cube_rotations() -> list[np.ndarray]:
    """The 24 rotations of the cube (signed permutation matrices with det +1)."""
    out = []
    for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        for signs in np.array(np.meshgrid([1, -1], [1, -1], [1, -1])).T.reshape(-1, 3):
            mat = np.zeros((3, 3))
            mat[np.arange(3), perm] = signs
            if np.linalg.det(mat) > 0:
                out.append(mat)
    return out


def _contact_normal(
    local: np.ndarray, normals: np.ndarray, contact: np.ndarray, threshold: float, radius_frac: float = 0.15
) -> np.ndarray | None:
    """Mean outward normal of the object's contact patch, each contact vertex weighted by its probability
    times the number of contact vertices around it, so that stray false contacts barely count."""
    sel = np.nonzero(contact > threshold)[0]
    if len(sel) == 0:
        return None
    radius = radius_frac * float(np.linalg.norm(np.ptp(local, axis=0)))
    density = np.array([len(n) for n in cKDTree(local[sel]).query_ball_point(local[sel], radius)], float)
    return _unit(((contact[sel] * density)[:, None] * normals[sel]).sum(0))


def _principal_frame(points: np.ndarray) -> np.ndarray:
    """(3,3) columns = principal axes, longest first, right-handed."""
    _, vectors = np.linalg.eigh(np.cov((points - points.mean(0)).T))
    frame = vectors[:, ::-1].copy()
    if np.linalg.det(frame) < 0:
        frame[:, 2] *= -1
    return frame


def _mask_axis(mask: np.ndarray) -> np.ndarray | None:
    """Longest axis of the mask's pixels as a camera-frame direction in the image plane (z = 0)."""
    rows, cols = np.nonzero(mask)
    if len(rows) < 3:
        return None
    _, vectors = np.linalg.eigh(np.cov(np.stack((cols, rows)).astype(np.float64)))
    du, dv = vectors[:, -1]
    return np.array([du, dv, 0.0]) / np.hypot(du, dv)


def _align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector a onto unit vector b."""
    a, b = _unit(a), _unit(b)
    axis = np.cross(a, b)
    sin, cos = float(np.linalg.norm(axis)), float(a @ b)
    if sin < 1e-9:
        if cos > 0:
            return np.eye(3)
        other = np.eye(3)[int(np.argmin(np.abs(a)))]
        return turn(np.cross(a, other), np.pi)
    return turn(axis, float(np.arctan2(sin, cos)))


def _unit(v: np.ndarray) -> np.ndarray | None:
    norm = float(np.linalg.norm(v))
    return None if norm < 1e-12 else np.asarray(v, dtype=np.float64) / norm
