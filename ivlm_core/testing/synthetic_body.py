"""Small humanoid body models written in the exact SMPL-X / SMPL-H file formats.

Why: the real body models are licensed and can never ship with tests or benchmarks, yet the code paths that
load and pose them (the `smplx` package, our pkl loader, the contact transfer) must run for real. The models
written here are read by the unmodified `smplx` classes, so everything downstream runs exactly as it would on
the official files, only with a coarse mesh (~1-2k vertices instead of 10475 / 6890).

Geometry: a ~1.75 m tall T-pose humanoid (metres, y up, facing +z, the body's left on +x, SMPL joint order
and kinematic tree). The surface is the zero level set of a union of capsules around the bones, meshed with
surface nets, so it is one connected, closed mesh (geodesics and renders behave like on a real body).
Skinning weights follow the nearest bones, the joint regressor reproduces the designed joints exactly, and
shape/pose blend shapes are small smooth random fields. Everything is seeded, so files are deterministic.

Besides the official keys, each file holds `ivlm_keypoint_vertex_names` / `ivlm_keypoint_vertex_ids`: the
vertices that stand in for the nose, eyes, ears, toes, heels and fingertips. smplx ignores unknown keys;
`ivlm_core.body.models.load_body_model` uses them because the official keypoint vertex ids (up to 9929) do not
exist on a small mesh.
"""

from __future__ import annotations

import pickle
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import joblib
import numpy as np
import scipy.sparse as sp
from scipy.optimize import nnls
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

BODY_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)
BODY_PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
FINGERS: tuple[str, ...] = ("index", "middle", "pinky", "ring", "thumb")  # MANO / SMPL-H joint order
KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
    "lthumb", "lindex", "lmiddle", "lring", "lpinky", "rthumb", "rindex", "rmiddle", "rring", "rpinky",
)
_ROOT_PARENT = 4294967295  # how the official kintree tables mark the root

# Left-side body joints at rest (metres); right side is the mirror image in x.
_BODY_REST = {
    "pelvis": (0.0, -0.22, 0.0), "left_hip": (0.06, -0.31, 0.0), "spine1": (0.0, -0.11, -0.01),
    "left_knee": (0.10, -0.69, 0.01), "spine2": (0.0, 0.02, -0.01), "left_ankle": (0.09, -1.08, -0.03),
    "spine3": (0.0, 0.08, 0.0), "left_foot": (0.11, -1.14, 0.08), "neck": (0.0, 0.28, -0.02),
    "left_collar": (0.07, 0.20, -0.01), "head": (0.0, 0.37, 0.02), "left_shoulder": (0.17, 0.22, -0.02),
    "left_elbow": (0.43, 0.21, -0.04), "left_wrist": (0.68, 0.21, -0.03),
}
# Finger base offsets from the left wrist, and the phalanx direction (fingers point along +x in T-pose).
_FINGER_BASE = {
    "index": (0.090, 0.0, 0.030), "middle": (0.095, 0.0, 0.008), "ring": (0.090, 0.0, -0.014),
    "pinky": (0.080, 0.0, -0.035), "thumb": (0.025, -0.010, 0.030),
}
_FINGER_DIR = {"thumb": (0.8, -0.1, 0.6)}
_PHALANX = (0.035, 0.025, 0.020)


def _mirror(p: tuple[float, float, float]) -> np.ndarray:
    return np.array([-p[0], p[1], p[2]])


def _hand_joints(side: str, wrist: np.ndarray) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Names, rest positions and tip positions (per finger) of the 15 joints of one hand."""
    sign = 1.0 if side == "left" else -1.0
    names, pos, tips = [], [], []
    for finger in FINGERS:
        base = wrist + np.array(_FINGER_BASE[finger]) * (sign, 1.0, 1.0)
        direction = np.array(_FINGER_DIR.get(finger, (1.0, 0.0, 0.0))) * (sign, 1.0, 1.0)
        direction /= np.linalg.norm(direction)
        p = base.copy()
        for k, length in enumerate(_PHALANX):
            names.append(f"{side}_{finger}{k + 1}")
            pos.append(p.copy())
            p = p + direction * length
        tips.append(p + direction * 0.005)
    return names, pos, tips


class _Skeleton:
    """Joint names, rest positions, parents, and bone end points for skinning and geometry."""

    def __init__(self, kind: str, scale: np.ndarray) -> None:
        body = {}
        for name in BODY_JOINT_NAMES:
            if name in _BODY_REST:
                body[name] = np.array(_BODY_REST[name], dtype=np.float64)
            else:
                body[name] = _mirror(_BODY_REST[name.replace("right_", "left_")])
        names = list(BODY_JOINT_NAMES)
        pos = [body[n] for n in names]
        parents = list(BODY_PARENTS)
        self.ends: dict[int, list[np.ndarray]] = {}  # extra segment end points of leaf joints
        head = names.index("head")
        if kind == "smplx":
            for name, p in (("jaw", (0.0, 0.41, 0.03)), ("left_eye_smplhf", (0.03, 0.47, 0.085)),
                            ("right_eye_smplhf", (-0.03, 0.47, 0.085))):
                names.append(name)
                pos.append(np.array(p))
                parents.append(head)
            self.ends[names.index("jaw")] = [np.array((0.0, 0.39, 0.10))]
        self.finger_tips: dict[str, list[np.ndarray]] = {}
        for side in ("left", "right"):
            wrist_idx = names.index(f"{side}_wrist")
            hnames, hpos, tips = _hand_joints(side, pos[wrist_idx])
            self.finger_tips[side] = tips
            first = len(names)
            for k, (hn, hp) in enumerate(zip(hnames, hpos)):
                names.append(hn)
                pos.append(hp)
                parents.append(wrist_idx if k % 3 == 0 else first + k - 1)
                if k % 3 == 2:
                    self.ends[first + k] = [tips[k // 3]]
        self.ends[head] = [np.array((0.0, 0.55, 0.02))]
        for side, s in (("left", 1.0), ("right", -1.0)):
            self.ends[names.index(f"{side}_foot")] = [np.array((0.11 * s, -1.15, 0.16))]
        self.names = tuple(names)
        self.parents = np.array(parents, dtype=np.int64)
        self.rest = np.array(pos, dtype=np.float64) * scale
        self.ends = {j: [e * scale for e in ends] for j, ends in self.ends.items()}
        self.finger_tips = {s: [t * scale for t in tips] for s, tips in self.finger_tips.items()}
        self.scale = scale

    def bones(self, skip_eyes: bool = True) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(joint moving the segment, start, end) for every parent->child segment and leaf extension."""
        segments = []
        for child, parent in enumerate(self.parents):
            if parent < 0 or (skip_eyes and "eye" in self.names[child]):
                continue
            segments.append((int(parent), self.rest[parent], self.rest[child]))
        for joint, ends in self.ends.items():
            segments.extend((joint, self.rest[joint], e) for e in ends)
        return segments

    def joint(self, name: str) -> np.ndarray:
        return self.rest[self.names.index(name)]


def _capsules(sk: _Skeleton) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """Capsules (start, end, start radius, end radius) whose union is the body volume."""
    s = sk.scale
    caps = [
        (np.array((0, -0.26, 0)) * s, np.array((0, 0.16, 0)) * s, 0.125, 0.135),
        (sk.joint("left_hip"), sk.joint("right_hip"), 0.10, 0.10),
        (np.array((0.11, 0.15, -0.01)) * s, np.array((-0.11, 0.15, -0.01)) * s, 0.095, 0.095),
        (sk.joint("neck") - np.array((0, 0.05, 0)), sk.joint("head"), 0.055, 0.055),
        (np.array((0, 0.43, 0.02)) * s, np.array((0, 0.51, 0.02)) * s, 0.095, 0.085),
    ]
    for side in ("left", "right"):
        j = sk.joint
        heel = j(f"{side}_ankle") + np.array((0, -0.06, -0.03)) * s
        toe = sk.ends[sk.names.index(f"{side}_foot")][0] + np.array((0, 0.005, 0)) * s
        hand_end = sk.finger_tips[side][1]
        caps += [
            (j(f"{side}_hip"), j(f"{side}_knee"), 0.085, 0.058),
            (j(f"{side}_knee"), j(f"{side}_ankle"), 0.055, 0.04),
            (j(f"{side}_ankle"), heel, 0.04, 0.038),
            (heel, toe, 0.038, 0.032),
            (j(f"{side}_collar"), j(f"{side}_shoulder"), 0.06, 0.055),
            (j(f"{side}_shoulder"), j(f"{side}_elbow"), 0.05, 0.042),
            (j(f"{side}_elbow"), j(f"{side}_wrist"), 0.04, 0.033),
            (j(f"{side}_wrist"), hand_end, 0.033, 0.03),
            (j(f"{side}_thumb1"), sk.finger_tips[side][4], 0.022, 0.02),
        ]
    return [(a, b, r0 * float(np.mean(s)), r1 * float(np.mean(s))) for a, b, r0, r1 in caps]


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of points to segment ab and the segment parameter t in [0, 1] of the closest point."""
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1), t


def _body_sdf(points: np.ndarray, caps: list) -> np.ndarray:
    sdf = np.full(len(points), np.inf)
    for a, b, r0, r1 in caps:
        d, t = _segment_distance(points, a, b)
        sdf = np.minimum(sdf, d - (r0 + (r1 - r0) * t))
    return sdf


def surface_nets(sdf: np.ndarray, origin: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Mesh the zero level set of a sampled signed distance field (negative inside) with naive surface nets.

    One vertex per grid cell that the surface crosses (the mean of its edge crossings), one quad (two
    triangles, outward-facing) per grid edge that crosses the surface. The grid border must be outside.
    """
    inside = sdf < 0
    cell_shape = np.array(sdf.shape) - 1
    n_cells = int(np.prod(cell_shape))
    sums = np.zeros((n_cells, 3))
    counts = np.zeros(n_cells)
    quads = []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(0, -1)
        hi[axis] = slice(1, None)
        s0, s1 = sdf[tuple(lo)], sdf[tuple(hi)]
        crossing = inside[tuple(lo)] != inside[tuple(hi)]
        idx = np.argwhere(crossing)
        t = s0[crossing] / (s0[crossing] - s1[crossing])
        point = origin + spacing * idx.astype(np.float64)
        point[:, axis] += spacing * t
        others = [a for a in range(3) if a != axis]
        # the 4 cells sharing this edge, ordered counter-clockwise around +axis
        ring = ((-1, -1), (0, -1), (0, 0), (-1, 0)) if axis != 1 else ((-1, -1), (-1, 0), (0, 0), (0, -1))
        corner_cells = []
        for d0, d1 in ring:
            cell = idx.copy()
            cell[:, others[0]] += d0
            cell[:, others[1]] += d1
            valid = np.all((cell >= 0) & (cell < cell_shape), axis=1)
            flat = np.ravel_multi_index(np.where(valid[:, None], cell, 0).T, cell_shape)
            np.add.at(sums, flat[valid], point[valid])
            np.add.at(counts, flat[valid], 1.0)
            corner_cells.append(np.where(valid, flat, -1))
        corner_cells = np.stack(corner_cells, axis=1)
        full = np.all(corner_cells >= 0, axis=1)
        outward_positive = inside[tuple(lo)][crossing][full]
        q = corner_cells[full]
        quads.append(np.where(outward_positive[:, None], q, q[:, ::-1]))
    active = np.flatnonzero(counts)
    remap = np.full(n_cells, -1, dtype=np.int64)
    remap[active] = np.arange(len(active))
    vertices = sums[active] / counts[active, None]
    quads = remap[np.concatenate(quads)]
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    return vertices, faces


def _largest_component(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    graph = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    keep_label = np.bincount(labels[np.unique(faces)]).argmax()
    keep = labels == keep_label
    remap = np.cumsum(keep) - 1
    faces = faces[keep[faces[:, 0]]]
    return vertices[keep], remap[faces]


def _mesh(sk: _Skeleton, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    caps = _capsules(sk)
    lo = np.min([np.minimum(a, b) - max(r0, r1) for a, b, r0, r1 in caps], axis=0) - 2 * spacing
    hi = np.max([np.maximum(a, b) + max(r0, r1) for a, b, r0, r1 in caps], axis=0) + 2 * spacing
    axes = [np.arange(lo[k], hi[k] + spacing, spacing) for k in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    sdf = _body_sdf(grid.reshape(-1, 3), caps).reshape(grid.shape[:3])
    vertices, faces = surface_nets(sdf, lo, spacing)
    return _largest_component(vertices, faces)


def _skinning_weights(vertices: np.ndarray, sk: _Skeleton, sharpness: float = 0.012) -> np.ndarray:
    """Soft nearest-bone weights: bones within a few cm of the nearest one share the vertex."""
    num_joints = len(sk.names)
    dist = np.full((len(vertices), num_joints), np.inf)
    for joint, a, b in sk.bones():
        d, _ = _segment_distance(vertices, a, b)
        dist[:, joint] = np.minimum(dist[:, joint], d)
    excess = dist - dist.min(axis=1, keepdims=True)
    weights = np.where(excess < 4 * sharpness, np.exp(-excess / sharpness), 0.0)
    return weights / weights.sum(axis=1, keepdims=True)


def _joint_regressor(vertices: np.ndarray, joints: np.ndarray, k: int = 128) -> np.ndarray:
    """Convex weights (like the official regressors) on the k nearest vertices that best reproduce a joint."""
    tree = cKDTree(vertices)
    regressor = np.zeros((len(joints), len(vertices)))
    for j, p in enumerate(joints):
        _, nearest = tree.query(p, k=k)
        # non-negative least squares with the sum-to-one row weighted heavily
        system = np.vstack([vertices[nearest].T, 10.0 * np.ones(k)])
        w, _ = nnls(system, np.append(p, 10.0))
        regressor[j, nearest] = w / w.sum()
    return regressor


def _smooth_fields(vertices: np.ndarray, count: int, amplitude: float,
                   rng: np.random.Generator) -> np.ndarray:
    """`count` smooth displacement fields (N, 3, count): random affine + quadratic functions of position."""
    centred = vertices - vertices.mean(axis=0)
    basis = np.concatenate([centred, centred**2, np.ones((len(vertices), 1))], axis=1)  # (N, 7)
    coeffs = rng.normal(size=(count, 7, 3)) * amplitude
    return np.einsum("nb,cbk->nkc", basis, coeffs)


def _landmarks(vertices: np.ndarray, faces: np.ndarray, sk: _Skeleton, rng: np.random.Generator) -> dict:
    """Static (51) and dynamic (79 x 17) face landmarks on head faces, with random barycentric weights."""
    centroids = vertices[faces].mean(axis=1)
    head = sk.joint("head")
    on_head = centroids[:, 1] > head[1] + 0.02 * sk.scale[1]
    front = np.flatnonzero(on_head & (centroids[:, 2] > head[2] + 0.03))
    side = np.flatnonzero(on_head)

    def bary(shape: tuple[int, ...]) -> np.ndarray:
        w = rng.uniform(0.1, 1.0, size=(*shape, 3))
        return w / w.sum(axis=-1, keepdims=True)

    return {
        "lmk_faces_idx": front[np.linspace(0, len(front) - 1, 51).astype(np.int64)],
        "lmk_bary_coords": bary((51,)),
        "dynamic_lmk_faces_idx": side[rng.integers(0, len(side), size=(79, 17))],
        "dynamic_lmk_bary_coords": bary((79, 17)),
    }


def _keypoint_vertices(vertices: np.ndarray, sk: _Skeleton) -> dict[str, int]:
    s = sk.scale
    head = sk.joint("head")
    targets = {
        "nose": head + np.array((0.0, 0.07, 0.12)) * s,
        "reye": head + np.array((-0.03, 0.1, 0.065)) * s,
        "leye": head + np.array((0.03, 0.1, 0.065)) * s,
        "rear": head + np.array((-0.1, 0.08, 0.0)) * s,
        "lear": head + np.array((0.1, 0.08, 0.0)) * s,
    }
    for side, prefix in (("left", "L"), ("right", "R")):
        toe = sk.ends[sk.names.index(f"{side}_foot")][0]
        sign = 1.0 if side == "left" else -1.0
        targets[f"{prefix}BigToe"] = toe + np.array((-0.02 * sign, 0.0, 0.03)) * s
        targets[f"{prefix}SmallToe"] = toe + np.array((0.03 * sign, 0.0, 0.0)) * s
        targets[f"{prefix}Heel"] = sk.joint(f"{side}_ankle") + np.array((0.0, -0.07, -0.09)) * s
        for finger, tip in zip(FINGERS, sk.finger_tips[side]):
            targets[f"{side[0]}{finger}"] = tip
    tree = cKDTree(vertices)
    return {name: int(tree.query(targets[name])[1]) for name in KEYPOINT_NAMES}


_GENDER_SCALE = {"neutral": (1.0, 1.0, 1.0), "male": (1.04, 1.03, 1.04), "female": (0.96, 0.97, 0.96)}


def build_synthetic_model(kind: str, gender: str = "neutral", spacing: float | None = None,
                          seed: int = 0) -> dict[str, np.ndarray]:
    """All arrays of a synthetic SMPL-X (`kind='smplx'`) or SMPL-H (`'smplh'`) model, keyed as on disk."""
    if kind not in ("smplx", "smplh"):
        raise ValueError(f"kind must be 'smplx' or 'smplh', got {kind!r}")
    if gender not in _GENDER_SCALE:
        raise ValueError(f"gender must be one of {sorted(_GENDER_SCALE)}, got {gender!r}")
    rng = np.random.default_rng([seed, 0 if kind == "smplx" else 1, list(_GENDER_SCALE).index(gender)])
    sk = _Skeleton(kind, np.array(_GENDER_SCALE[gender]))
    # different resolutions give the two models different topologies, as for the real ones
    spacing = spacing if spacing is not None else (0.03 if kind == "smplx" else 0.036)
    vertices, faces = _mesh(sk, spacing)
    num_joints = len(sk.names)
    weights = _skinning_weights(vertices, sk)
    num_shape, num_expr = (300, 100) if kind == "smplx" else (10, 0)
    shapedirs = _smooth_fields(vertices, num_shape + num_expr, 0.004, rng)
    # beta 0 behaves like height, beta 1 like girth: easy to check by eye and in tests
    shapedirs[:, :, 0] = 0.0
    shapedirs[:, 1, 0] = 0.03 * (vertices[:, 1] - vertices[:, 1].min())
    shapedirs[:, [0, 2], 1] = 0.02 * (vertices[:, [0, 2]] - vertices[:, [0, 2]].mean(axis=0))
    if num_expr:
        head_mask = (vertices[:, 1] > sk.joint("neck")[1]).astype(np.float64)
        shapedirs[:, :, num_shape:] *= head_mask[:, None, None]
    posedirs = rng.normal(scale=0.002, size=(len(vertices), 3, 9 * (num_joints - 1)))
    for j in range(1, num_joints):  # pose correctives only near the joint that drives them
        near = weights[:, j] + weights[:, sk.parents[j]]
        posedirs[:, :, 9 * (j - 1):9 * j] *= near[:, None, None]
    hands = {}
    for side in ("l", "r"):
        components, _ = np.linalg.qr(rng.normal(size=(45, 45)))
        hands[f"hands_components{side}"] = components.T
        hands[f"hands_mean{side}"] = rng.normal(scale=0.1, size=45)
    keypoints = _keypoint_vertices(vertices, sk)
    regressor = _joint_regressor(vertices, sk.rest)
    model = {
        "v_template": vertices,
        "f": faces.astype(np.uint32),
        "shapedirs": shapedirs.astype(np.float32),  # float32 halves the files; smplx casts anyway
        "posedirs": posedirs.astype(np.float32),
        "J_regressor": regressor,
        "J": regressor @ vertices,
        "kintree_table": np.stack([np.where(sk.parents < 0, _ROOT_PARENT, sk.parents),
                                   np.arange(num_joints)]).astype(np.int64),
        "weights": weights,
        **hands,
        "ivlm_keypoint_vertex_names": np.array(KEYPOINT_NAMES),
        "ivlm_keypoint_vertex_ids": np.array([keypoints[n] for n in KEYPOINT_NAMES], dtype=np.int64),
    }
    if kind == "smplx":
        model.update(_landmarks(vertices, faces, sk, rng))
    else:
        model["bs_style"] = "lbs"
        model["bs_type"] = "lrotmin"
    return model


def write_synthetic_smplx(out_dir: str | Path, gender: str = "neutral", seed: int = 0) -> Path:
    """Write `<out_dir>/smplx/SMPLX_<GENDER>.npz` (the official SMPL-X v1.1 npz layout); return its path."""
    path = Path(out_dir) / "smplx" / f"SMPLX_{gender.upper()}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build_synthetic_model("smplx", gender, seed=seed)
    np.savez(path, **{k: np.asarray(v) for k, v in model.items()})
    return path


class _FakeChumpyArray:
    """Pickles like `chumpy.ch.Ch` (state dict with the value in 'x'), as in the official SMPL-H pkl files."""

    def __init__(self, value: np.ndarray) -> None:
        self.x = value
        self._dirty_vars: set = set()
        self._itr = None
        self._depends_on_deps: dict = {}
        self._make_dense = False
        self._make_sparse = False

    def __getstate__(self) -> dict:
        return dict(self.__dict__)


@contextmanager
def _posing_as_chumpy() -> Iterator[None]:
    """Let pickle record `_FakeChumpyArray` as `chumpy.ch.Ch` without chumpy being installed."""
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch")}
    saved_names = (_FakeChumpyArray.__module__, _FakeChumpyArray.__name__, _FakeChumpyArray.__qualname__)
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    module.Ch = _FakeChumpyArray
    package.ch = module
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = package, module
    _FakeChumpyArray.__module__ = "chumpy.ch"
    _FakeChumpyArray.__name__ = _FakeChumpyArray.__qualname__ = "Ch"
    try:
        yield
    finally:
        _FakeChumpyArray.__module__, _FakeChumpyArray.__name__, _FakeChumpyArray.__qualname__ = saved_names
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def write_synthetic_smplh(out_dir: str | Path, gender: str = "neutral",
                          formats: tuple[str, ...] = ("pkl", "npz"), chumpy: bool = True,
                          protocol: int = 2, seed: int = 0) -> Path:
    """Write `<out_dir>/smplh/SMPLH_<GENDER>.{pkl,npz}`; return the first written path (the pkl by default).

    The pkl imitates the official Python-2 era files: pickle `protocol` 2 (0 was Python 2's default),
    `shapedirs`/`posedirs` as chumpy arrays (when `chumpy`), `J_regressor` as a scipy CSC matrix,
    `bs_style`/`bs_type` strings.
    """
    model = build_synthetic_model("smplh", gender, seed=seed)
    folder = Path(out_dir) / "smplh"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = folder / f"SMPLH_{gender.upper()}.{fmt}"
        if fmt == "npz":
            np.savez(path, **{k: np.asarray(v) for k, v in model.items()})
        elif fmt == "pkl":
            legacy = dict(model)
            legacy["J_regressor"] = sp.csc_matrix(model["J_regressor"])
            legacy["ivlm_keypoint_vertex_names"] = list(KEYPOINT_NAMES)
            if chumpy:
                with _posing_as_chumpy():
                    legacy["shapedirs"] = _FakeChumpyArray(model["shapedirs"])
                    legacy["posedirs"] = _FakeChumpyArray(model["posedirs"])
                    path.write_bytes(pickle.dumps(legacy, protocol=protocol))
            else:
                path.write_bytes(pickle.dumps(legacy, protocol=protocol))
        else:
            raise ValueError(f"unknown format {fmt!r}; use 'pkl' or 'npz'")
        written.append(path)
    return written[0]


def write_synthetic_transfer(path: str | Path, num_target: int | None = None, num_source: int | None = None,
                             *, target_vertices: np.ndarray | None = None,
                             source_vertices: np.ndarray | None = None, neighbours: int = 3,
                             dense: bool = False, seed: int = 0) -> Path:
    """Write a `smpl_to_smplx.pkl`-style file: joblib pickle of {'matrix': (num_target, num_source)}.

    With vertex positions, each target vertex interpolates its `neighbours` nearest source vertices
    (inverse-distance weights, rows sum to 1), which is what the real mapping does between aligned meshes.
    With counts only, rows mix random source vertices. `.npz` paths get scipy's sparse npz format instead.
    """
    rng = np.random.default_rng(seed)
    if target_vertices is not None and source_vertices is not None:
        dist, cols = cKDTree(source_vertices).query(target_vertices, k=neighbours)
        dist, cols = dist.reshape(len(target_vertices), -1), cols.reshape(len(target_vertices), -1)
        w = 1.0 / (dist + 1e-4)
        num_target, num_source = len(target_vertices), len(source_vertices)
    elif num_target is not None and num_source is not None:
        cols = rng.integers(0, num_source, size=(num_target, neighbours))
        w = rng.uniform(0.2, 1.0, size=(num_target, neighbours))
    else:
        raise ValueError("give either num_target and num_source, or target_vertices and source_vertices")
    w = w / w.sum(axis=1, keepdims=True)
    rows = np.repeat(np.arange(num_target), w.shape[1])
    matrix = sp.csr_matrix((w.ravel(), (rows, cols.ravel())), shape=(num_target, num_source))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":
        sp.save_npz(path, matrix)
    else:
        joblib.dump({"matrix": matrix.toarray() if dense else matrix}, path)
    return path


def write_synthetic_body_models(out_dir: str | Path, seed: int = 0) -> Path:
    """A complete synthetic `<body_model_dir>`: neutral SMPL-X npz, SMPL-H pkl+npz and smpl_to_smplx.pkl."""
    out_dir = Path(out_dir)
    smplx_path = write_synthetic_smplx(out_dir, seed=seed)
    write_synthetic_smplh(out_dir, seed=seed)
    smplh = build_synthetic_model("smplh", seed=seed)
    with np.load(smplx_path) as smplx_arrays:
        target = smplx_arrays["v_template"]
    write_synthetic_transfer(out_dir / "smpl_to_smplx.pkl", target_vertices=target,
                             source_vertices=smplh["v_template"], seed=seed)
    return out_dir
