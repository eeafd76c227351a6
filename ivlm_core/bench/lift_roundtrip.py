"""Render -> paint -> lift round trip: checks that rasterizer and soft lifting are consistent, and times both.

A known vertex set is painted on a self-occluding test figure (a torso with two arms crossing in front of it
and a head, about 10k faces). The four human views are rasterized, each pixel whose face is painted (at least
two painted corners) gets logit +10 and every other pixel -10, the masks are lifted back with the current soft
human rule and thresholded at 0.5. The IoU with the painted set is measured over the vertices visible in
some view.

Run from the repository root: `python -m ivlm_core.bench.lift_roundtrip [--size 1024] [--repeats 5]`.
The last line is `iou=<float> rasterize_ms=<float> lift_ms=<float>` (all 4 views, after a warm-up run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
import trimesh

from ivlm_core.geometry.lifting import LiftingMaps, lift_human_soft
from ivlm_core.geometry.raster import Fragments, rasterize_views
from ivlm_core.geometry.shading import normalize_mesh
from ivlm_core.geometry.views import get_view_set

PAINT_LOGIT = 10.0


def _capsule(radius: float, length: float, start: np.ndarray, end: np.ndarray, count: int) -> trimesh.Trimesh:
    """A capsule whose axis runs from `start` to `end` (trimesh builds it along z, centred at the origin)."""
    mesh = trimesh.creation.capsule(height=length, radius=radius, count=[count, count])
    axis = (end - start) / np.linalg.norm(end - start)
    mesh.apply_transform(trimesh.geometry.align_vectors([0.0, 0.0, 1.0], axis))
    mesh.apply_translation((start + end) / 2.0)
    return mesh


def build_test_figure(detail: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """A normalised humanoid-ish mesh with strong self-occlusion; detail 56 gives about 10k faces."""
    parts = [
        _capsule(0.22, 0.7, np.array([0.0, -0.35, 0.0]), np.array([0.0, 0.35, 0.0]), detail),  # torso
        _capsule(0.07, 0.8, np.array([-0.45, 0.25, 0.3]), np.array([0.35, -0.1, 0.32]), detail // 2),  # arm
        _capsule(0.07, 0.8, np.array([0.45, 0.25, 0.3]), np.array([-0.35, -0.1, 0.34]), detail // 2),  # arm
        trimesh.creation.icosphere(subdivisions=3, radius=0.16).apply_translation([0.0, 0.72, 0.0]),  # head
    ]
    mesh = trimesh.util.concatenate(parts)
    return normalize_mesh(mesh.vertices), np.asarray(mesh.faces, dtype=np.int64)


def paint_vertices(vertices: np.ndarray) -> np.ndarray:
    """A known vertex set of contiguous regions: upper-right torso, lower arms and the back of the head."""
    x, y, z = vertices.T
    return ((y > 0.05) & (x > 0.0)) | ((y < -0.1) & (z > 0.1)) | ((y > 0.3) & (z < -0.02))


def painted_face_logits(frags: list[Fragments], faces: np.ndarray, painted: np.ndarray) -> torch.Tensor:
    """(V,H,W) logits: +10 where the rasterized face has >= 2 painted corners, -10 elsewhere."""
    face_painted = painted[faces].sum(axis=1) >= 2
    logits = []
    for frag in frags:
        hit = frag.face_index >= 0
        fg = np.zeros(hit.shape, dtype=bool)
        fg[hit] = face_painted[frag.face_index[hit]]
        logits.append(np.where(fg, PAINT_LOGIT, -PAINT_LOGIT).astype(np.float32))
    return torch.from_numpy(np.stack(logits))


@dataclass
class RoundTripResult:
    iou: float
    rasterize_ms: float
    lift_ms: float
    maps_ms: float
    jit_ms: float
    num_faces: int
    num_visible: int


def run_roundtrip(image_size: int = 1024, repeats: int = 5, detail: int = 56) -> RoundTripResult:
    """Paint, rasterize the 4 human views, lift back; IoU over visible vertices and median timings."""
    vertices, faces = build_test_figure(detail)
    views = get_view_set("4MV-Z_Vitru")
    painted = paint_vertices(vertices)

    start = time.perf_counter()
    rasterize_views(vertices, faces, views, image_size)  # JIT compile (or load from the numba cache)
    jit_ms = (time.perf_counter() - start) * 1e3

    raster_times, lift_times = [], []
    frags: list[Fragments] = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        frags = rasterize_views(vertices, faces, views, image_size)
        raster_times.append((time.perf_counter() - start) * 1e3)

    start = time.perf_counter()
    maps = LiftingMaps.from_fragments(frags, len(vertices))
    maps.valid_pixels()
    maps_ms = (time.perf_counter() - start) * 1e3
    logits = painted_face_logits(frags, faces, painted)
    contact = lift_human_soft(logits, maps)  # warm-up
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        contact = lift_human_soft(logits, maps)
        lift_times.append((time.perf_counter() - start) * 1e3)

    visible = np.zeros(len(vertices), dtype=bool)
    visible[maps.valid_pixels().ids.reshape(-1).numpy()] = True
    predicted = contact[0].numpy() > 0.5
    truth = painted & visible
    union = np.count_nonzero(predicted | truth)
    iou = np.count_nonzero(predicted & truth) / union if union else 1.0
    return RoundTripResult(
        iou=float(iou),
        rasterize_ms=statistics.median(raster_times),
        lift_ms=statistics.median(lift_times),
        maps_ms=maps_ms,
        jit_ms=jit_ms,
        num_faces=len(faces),
        num_visible=int(visible.sum()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="image size of each view")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (median is printed)")
    args = parser.parse_args()
    result = run_roundtrip(args.size, args.repeats)
    print(f"mesh: {result.num_faces} faces, {result.num_visible} vertices visible in some view")
    print(
        f"jit_or_cache_load_ms={result.jit_ms:.1f} maps_build_ms={result.maps_ms:.1f} torch_threads="
        f"{torch.get_num_threads()}"
    )
    print(f"iou={result.iou:.4f} rasterize_ms={result.rasterize_ms:.1f} lift_ms={result.lift_ms:.1f}")


if __name__ == "__main__":
    main()
