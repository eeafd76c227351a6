"""Shape symmetry of a rigid object, and pose errors / pose comparisons modulo it.

A symmetric object has several poses that look the same, so no fit can (or should) tell them apart: the fit's
"is the runner-up a different pose?" and the benchmark's error both compare poses modulo the symmetry.

Kinds (all in the object's own frame, through ``centre``):

* ``none``: every pose is distinct.
* ``axial``: any turn about ``axis`` maps the object onto itself (bottle, can, handle); with ``flip`` it is also
  symmetric end over end (a capsule, a cylinder without a top).
* ``planar``: the object is mirror-symmetric across the planes with normals ``planes``. A mirror is not a
  motion, but two mirrors make one: reflecting across two planes is the turn about their common line by twice
  the angle between them. So a box (three perpendicular planes) looks the same after a half-turn about any of
  its axes, a racket (its face plane and the plane through its shaft) after a half-turn about the shaft, and a
  mug (one plane through its handle) has no pose twin.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from ivlm_core.errors import InvalidInputError
from ivlm_core.fitting.rotation import rotation_angle_deg

KINDS = ("none", "axial", "planar")


@dataclass(frozen=True)
class Symmetry:
    """Symmetry of an object mesh (object frame); ``source`` says whether it was given or measured."""

    kind: str = "none"
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    flip: bool = False
    planes: tuple[tuple[float, float, float], ...] = ()
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    source: str = "default"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInputError(f"symmetry must be one of {KINDS}, got '{self.kind}'")
        if self.kind == "axial" and not np.linalg.norm(self.axis) > 0:
            raise InvalidInputError("axial symmetry needs a non-zero 'axis' (object frame)")
        if self.kind == "planar" and not self.planes:
            raise InvalidInputError("planar symmetry needs 'planes': a list of mirror-plane normals (object frame)")

    @classmethod
    def from_dict(cls, data: object, source: str = "given") -> Symmetry:
        """``none`` / ``{kind: axial, axis: [0, 0, 1], flip: true}`` / ``{kind: planar, planes: [[1,0,0]]}``."""
        if data is None or isinstance(data, str):
            return cls(kind=str(data or "none"), source=source)
        if not isinstance(data, dict):
            raise InvalidInputError(f"symmetry must be a kind name or a map with 'kind', got {data!r}")
        unknown = sorted(set(data) - {"kind", "axis", "flip", "planes", "centre"})
        if unknown:
            raise InvalidInputError(f"unknown symmetry keys {unknown}; known: kind, axis, flip, planes, centre")
        try:
            axis = _unit(data.get("axis", (0.0, 0.0, 1.0)))
            planes = tuple(_unit(p) for p in data.get("planes", ()))
            centre = tuple(float(c) for c in data.get("centre", (0.0, 0.0, 0.0)))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"symmetry axis/planes/centre must be 3-vectors: {exc}") from exc
        if len(centre) != 3:
            raise InvalidInputError("symmetry centre must be a 3-vector")
        return cls(str(data.get("kind", "none")), axis, bool(data.get("flip", False)), planes, centre, source)

    def scaled(self, factor: float) -> Symmetry:
        """The same symmetry for the mesh scaled by ``factor`` (the centre moves with it)."""
        centre = tuple(float(c) * factor for c in self.centre)
        return Symmetry(self.kind, self.axis, self.flip, self.planes, centre, self.source)

    def describe(self) -> str:
        if self.kind == "axial":
            return f"axial about {np.round(self.axis, 3).tolist()}" + (" with flip" if self.flip else "")
        if self.kind == "planar":
            return f"planar ({len(self.planes)} mirror planes, {len(self.rotations()) - 1} pose twins)"
        return "none"

    def rotations(self) -> np.ndarray:
        """(G,3,3) the discrete turns S (about ``centre``) that map the object onto itself, identity first.

        Axial symmetry is continuous: its comparisons use the axis directly, and this returns the identity
        plus the end-over-end half-turn when ``flip``. Computed once (the fit compares hundreds of poses)."""
        return self._turns

    @cached_property
    def _turns(self) -> np.ndarray:
        if self.kind == "planar":
            mirrors = [np.eye(3) - 2.0 * np.outer(n, n) for n in self.planes]
            return _closure([a @ b for a in mirrors for b in mirrors])
        if self.kind == "axial" and self.flip:
            return np.stack((np.eye(3), _half_turn(_perpendicular(np.asarray(self.axis)))))
        return np.eye(3)[None]

    def rotation_error_deg(self, rotation_a: np.ndarray, rotation_b: np.ndarray) -> float:
        """Smallest angle between two object rotations over the poses that look the same."""
        rotation_a, rotation_b = np.asarray(rotation_a, float), np.asarray(rotation_b, float)
        if self.kind == "axial":
            axis = np.asarray(self.axis, dtype=np.float64)
            cos = float((rotation_a @ axis) @ (rotation_b @ axis))
            return float(np.degrees(np.arccos(np.clip(abs(cos) if self.flip else cos, -1.0, 1.0))))
        return min(rotation_angle_deg(rotation_a @ s, rotation_b) for s in self.rotations())

    def centre_in_camera(self, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
        """The symmetry centre (fixed by every twin turn) under the pose x_cam = R x + t."""
        return np.asarray(rotation, float) @ np.asarray(self.centre, float) + np.asarray(translation, float)


NO_SYMMETRY = Symmetry()


def measure_symmetry(
    vertices: np.ndarray, faces: np.ndarray, tolerance: float = 0.01, samples: int = 3000, seed: int = 0
) -> Symmetry:
    """Find the symmetry of a mesh by testing candidate turns and mirrors about its principal axes.

    A candidate holds when the 99.5th percentile of the distances from the moved surface samples to the
    unmoved surface is below ``tolerance`` times the bounding-box diagonal (plus the sampling's own
    spacing); a high percentile, not the mean, so that a small feature (a spray nozzle, a handle) breaks it.
    """
    mesh = trimesh.Trimesh(np.asarray(vertices, np.float64), np.asarray(faces, np.int64), process=False,
                           validate=False)
    if len(mesh.faces) == 0 or not mesh.area > 0:
        return Symmetry(source="measured")
    points, _ = trimesh.sample.sample_surface(mesh, samples, seed=seed)
    dense, _ = trimesh.sample.sample_surface(mesh, samples * 6, seed=seed + 1)
    tree = cKDTree(dense)
    centre = dense.mean(axis=0)
    diag = float(np.linalg.norm(np.ptp(dense, axis=0)))
    noise = float(np.percentile(tree.query(points)[0], 99.5))
    limit = tolerance * diag + 2.0 * noise

    def holds(rotation: np.ndarray) -> bool:
        moved = (points - centre) @ rotation.T + centre
        return float(np.percentile(tree.query(moved)[0], 99.5)) < limit

    eigenvalues, eigenvectors = np.linalg.eigh(np.cov((dense - centre).T))
    candidates = [eigenvectors[:, k] for k in range(3)]
    for a, b in ((0, 1), (1, 2), (0, 2)):  # near-equal eigenvalues: the axes in that plane are arbitrary
        if abs(eigenvalues[a] - eigenvalues[b]) < 0.1 * max(eigenvalues[b], 1e-12):
            for angle in np.radians(np.arange(15.0, 180.0, 15.0)):
                candidates.append(np.cos(angle) * eigenvectors[:, a] + np.sin(angle) * eigenvectors[:, b])
    centre_t = tuple(float(c) for c in centre)
    for axis in candidates[:3]:
        if all(holds(turn(axis, np.radians(a))) for a in (37.0, 90.0, 151.0)):
            flip = holds(_half_turn(_perpendicular(axis)))
            return Symmetry("axial", tuple(float(c) for c in axis), flip, (), centre_t, "measured")
    planes = []
    for normal in candidates:
        if any(abs(normal @ p) > 0.97 for p in planes):
            continue
        if holds(np.eye(3) - 2.0 * np.outer(normal, normal)):
            planes.append(normal)
    if planes:
        return Symmetry("planar", (0.0, 0.0, 1.0), False, tuple(tuple(float(c) for c in p) for p in planes),
                        centre_t, "measured")
    return Symmetry("none", centre=centre_t, source="measured")


def _unit(vector: object) -> tuple[float, float, float]:
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    if v.shape != (3,) or not np.isfinite(v).all() or np.linalg.norm(v) == 0:
        raise ValueError(f"{vector!r} is not a non-zero 3-vector")
    return tuple(float(c) for c in v / np.linalg.norm(v))


def turn(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` (radians) about ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def _half_turn(axis: np.ndarray) -> np.ndarray:
    return turn(axis, np.pi)


def _perpendicular(axis: np.ndarray) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    other = np.eye(3)[int(np.argmin(np.abs(axis)))]
    out = np.cross(axis, other)
    return out / np.linalg.norm(out)


def _closure(generators: list[np.ndarray], limit: int = 48) -> np.ndarray:
    """The finite rotation group the generators span (identity first); stops at ``limit`` elements."""
    group = [np.eye(3)]
    frontier = list(generators)
    while frontier and len(group) < limit:
        g = frontier.pop()
        if any(np.abs(g - h).max() < 1e-6 for h in group):
            continue
        group.append(g)
        frontier.extend(g @ h for h in list(group))
    return np.stack(group)
