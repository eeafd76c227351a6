"""Rasterizer against an independent brute-force ray caster, plus its invariants and input checks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ivlm_core.errors import InvalidInputError
from ivlm_core.geometry.raster import checked_vertices, rasterize, rasterize_pinhole, rasterize_views
from ivlm_core.geometry.views import (
    CameraView,
    camera_position,
    focal_scale,
    get_view_set,
    pixel_centers_ndc,
    project_points,
    view_transform,
)

FRONT = CameraView("front", dist=2.0, elev=0.0, azim=0.0)


def _random_mesh(seed: int, num_faces: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping random triangles around the origin (independent faces, so occlusion is everywhere)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-0.5, 0.5, size=(num_faces, 1, 3))
    verts = (centres + rng.normal(scale=0.3, size=(num_faces, 3, 3))).reshape(-1, 3)
    return verts, np.arange(3 * num_faces).reshape(num_faces, 3)


def _ray_cast(verts: np.ndarray, faces: np.ndarray, view: CameraView, size: int):
    """Brute force: a ray from the optical centre through every pixel centre, Moller-Trumbore, nearest hit."""
    rot, _ = view_transform(view)
    origin = camera_position(view)
    ndc = pixel_centers_ndc(size)
    face_id = np.full((size, size), -1)
    bary = np.full((size, size, 3), -1.0)
    depth = np.full((size, size), -1.0)
    s = focal_scale()
    for i in range(size):
        for j in range(size):
            direction = rot @ np.array([ndc[j] / s, ndc[i] / s, 1.0])  # z_cam of origin + t*d equals t
            hit = _nearest_hit(verts, faces, origin, direction)
            if hit is not None:
                face_id[i, j], bary[i, j], depth[i, j] = hit
    return face_id, bary, depth


def _nearest_hit(verts: np.ndarray, faces: np.ndarray, origin: np.ndarray, direction: np.ndarray):
    """Moller-Trumbore over all faces: (face, barycentrics, t) of the nearest strictly-inside hit, or None."""
    best, found = np.inf, None
    for f, (a, b, c) in enumerate(verts[faces]):
        e1, e2 = b - a, c - a
        p = np.cross(direction, e2)
        det = e1 @ p
        if abs(det) < 1e-12:
            continue
        tvec = origin - a
        u = (tvec @ p) / det
        q = np.cross(tvec, e1)
        v = (direction @ q) / det
        t = (e2 @ q) / det
        if u > 0 and v > 0 and u + v < 1 and 0 < t < best:
            best = t
            found = f, (1 - u - v, u, v), t
    return found


def _ray_cast_pinhole(verts: np.ndarray, faces: np.ndarray, camera_k: np.ndarray, height: int, width: int):
    """Brute force for a pinhole camera at the origin: a ray through every pixel centre (u = col, v = row)."""
    face_id = np.full((height, width), -1)
    bary = np.full((height, width, 3), -1.0)
    depth = np.full((height, width), -1.0)
    (fx, _, cx), (_, fy, cy) = camera_k[:2]
    for i in range(height):
        for j in range(width):
            direction = np.array([(j - cx) / fx, (i - cy) / fy, 1.0])  # z of t*direction equals t
            hit = _nearest_hit(verts, faces, np.zeros(3), direction)
            if hit is not None:
                face_id[i, j], bary[i, j], depth[i, j] = hit
    return face_id, bary, depth


@pytest.mark.parametrize(("seed", "view"), [(0, FRONT), (1, get_view_set("4MV-Z_Vitru")[1])])
def test_matches_brute_force_ray_caster(seed: int, view: CameraView) -> None:
    verts, faces = _random_mesh(seed)
    frag = rasterize(verts, faces, view, image_size=24)
    face_id, bary, depth = _ray_cast(verts, faces, view, 24)
    assert (face_id >= 0).sum() > 100  # the test scene actually covers the image
    np.testing.assert_array_equal(frag.face_index, face_id)
    fg = face_id >= 0
    np.testing.assert_allclose(frag.bary[fg], bary[fg], atol=2e-6)
    np.testing.assert_allclose(frag.depth[fg], depth[fg], rtol=1e-6)
    np.testing.assert_array_equal(frag.pixel_to_vertex[fg], faces[face_id[fg]])


@pytest.mark.parametrize("include_edges", [True, False])
def test_pinhole_matches_brute_force_ray_caster_on_a_non_square_image(include_edges: bool) -> None:
    verts, faces = _random_mesh(7)
    verts = verts + np.array([0.05, -0.03, 2.2])  # camera frame: in front of the camera
    camera_k = np.array([[33.0, 0.0, 14.3], [0.0, 27.5, 8.6], [0.0, 0.0, 1.0]])  # fx != fy, odd centre
    frag = rasterize_pinhole(verts, faces, camera_k, (18, 29), include_edges=include_edges)
    face_id, bary, depth = _ray_cast_pinhole(verts, faces, camera_k, 18, 29)
    assert frag.face_index.shape == (18, 29) and frag.bary.shape == (18, 29, 3)
    assert (face_id >= 0).sum() > 150 and (face_id < 0).sum() > 20  # covers much, not all, of the image
    np.testing.assert_array_equal(frag.face_index, face_id)
    fg = face_id >= 0
    np.testing.assert_allclose(frag.bary[fg], bary[fg], atol=2e-6)
    np.testing.assert_allclose(frag.depth[fg], depth[fg], rtol=1e-6)
    np.testing.assert_array_equal(frag.pixel_to_vertex[fg], faces[face_id[fg]])
    assert (frag.depth[~fg] == -1).all() and (frag.bary[~fg] == -1).all()


def test_pinhole_edge_pixels_belong_to_a_face_only_with_include_edges() -> None:
    # A camera-facing square whose diagonal runs exactly through the pixel centres (u == v): the shared edge
    # leaves a one-pixel crack under PyTorch3D's strict rule and none when edges count as inside.
    square = np.array([[-0.4, -0.4, 2.0], [0.4, -0.4, 2.0], [0.4, 0.4, 2.0], [-0.4, 0.4, 2.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    camera_k = np.array([[20.0, 0.0, 10.0], [0.0, 20.0, 10.0], [0.0, 0.0, 1.0]])
    closed = rasterize_pinhole(square, faces, camera_k, (21, 25), include_edges=True)
    strict = rasterize_pinhole(square, faces, camera_k, (21, 25), include_edges=False)
    diagonal = [(k, k) for k in range(7, 14)]
    assert all(closed.face_index[k] >= 0 for k in diagonal)
    assert all(strict.face_index[k] == -1 for k in diagonal)
    inner = np.zeros((21, 25), dtype=bool)
    inner[7:14, 7:14] = True
    assert (closed.face_index[inner] >= 0).all()
    assert (strict.face_index[inner] >= 0).sum() == inner.sum() - len(diagonal)
    np.testing.assert_allclose(closed.depth[inner], 2.0, rtol=1e-6)


def test_bary_sums_to_one_and_reproduces_the_pixel_point() -> None:
    verts, faces = _random_mesh(3, num_faces=40)
    view = get_view_set("4MV-Z_HM", dist=1.5)[2]
    frag = rasterize(verts, faces, view, image_size=48)
    fg = frag.face_index >= 0
    rows, cols = np.nonzero(fg)
    weights = frag.bary[fg].astype(np.float64)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    assert weights.min() > 0
    points = np.einsum("pk,pkc->pc", weights, verts[frag.pixel_to_vertex[fg]])
    pix, z = project_points(points, view, 48)
    np.testing.assert_allclose(pix, np.stack([cols, rows], axis=1), atol=1e-4)
    np.testing.assert_allclose(z, frag.depth[fg], rtol=1e-5)


def _quad(z: float, half: float) -> np.ndarray:
    """A square facing the camera, nudged off-centre so its diagonal avoids pixel centres (an exact tie
    there leaves a one-pixel crack, as in PyTorch3D)."""
    square = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]])
    return square + np.array([0.0123, 0.0071, 0.0])


@pytest.mark.parametrize("near_first", [True, False])
def test_nearest_face_wins_whatever_the_face_order(near_first: bool) -> None:
    near, far = _quad(0.3, 0.3), _quad(-0.3, 1.2)  # camera at z=2: z=0.3 is nearer
    verts = np.concatenate([near, far] if near_first else [far, near])
    quad = np.array([[0, 1, 2], [0, 2, 3]])
    faces = np.concatenate([quad, quad + 4])
    frag = rasterize(verts, faces, FRONT, image_size=32)
    near_faces = {0, 1} if near_first else {2, 3}
    centre = frag.face_index[14:18, 14:18]
    assert set(np.unique(centre)) <= near_faces
    np.testing.assert_allclose(frag.depth[16, 16], 1.7, rtol=1e-6)
    corner = frag.face_index[2, 2]  # only the large far quad covers the corners
    assert corner >= 0 and corner not in near_faces
    np.testing.assert_allclose(frag.depth[2, 2], 2.3, rtol=1e-6)


def test_back_faces_are_drawn_and_background_layout() -> None:
    verts = _quad(0.0, 0.4)
    front = rasterize(verts, np.array([[0, 1, 2], [0, 2, 3]]), FRONT, 16)
    back = rasterize(verts, np.array([[0, 2, 1], [0, 3, 2]]), FRONT, 16)
    np.testing.assert_array_equal(front.face_index >= 0, back.face_index >= 0)
    assert (front.face_index >= 0).sum() > 0
    bg = front.face_index < 0
    assert bg.sum() > 0
    assert (
        (front.pixel_to_vertex[bg] == -1).all()
        and (front.bary[bg] == -1).all()
        and (front.depth[bg] == -1).all()
    )
    assert front.pixel_to_vertex.dtype == np.int64 and front.bary.dtype == np.float32


def test_degenerate_and_behind_camera_faces_are_skipped() -> None:
    verts = np.array(
        [
            [0.0, 0.0, 0.0],
            [0.5, 0.5, 0.0],
            [1.0, 1.0, 0.0],  # collinear: zero area
            [-0.5, -0.5, 3.0],
            [0.5, -0.5, 3.0],
            [0.0, 0.5, 3.0],  # behind the camera (z_cam = -1)
            [-0.5, -0.5, 0.0],
            [0.5, -0.5, 0.0],
            [0.0, 0.5, 2.5],  # straddles the camera plane
            [0.2, 0.2, 0.0],
            [0.2, 0.2, 0.0],
            [0.2, 0.2, 0.0],  # a point
        ]
    )
    frag = rasterize(verts, np.arange(12).reshape(4, 3), FRONT, 32)
    assert (frag.face_index == -1).all()


def test_views_batch_matches_single_view_calls() -> None:
    verts, faces = _random_mesh(5)
    views = get_view_set("4MV-Z_Vitru")
    batch = rasterize_views(verts, faces, views, 40)
    for view, frag in zip(views, batch):
        single = rasterize(verts, faces, view, 40)
        np.testing.assert_array_equal(single.face_index, frag.face_index)
        np.testing.assert_array_equal(single.bary, frag.bary)


def test_concurrent_calls_from_threads_agree() -> None:
    verts, faces = _random_mesh(6)
    views = get_view_set("4MV-Z_HM")
    expected = rasterize_views(verts, faces, views, 64)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: rasterize_views(verts, faces, views, 64), range(8)))
    for frags in results:
        for got, want in zip(frags, expected):
            np.testing.assert_array_equal(got.face_index, want.face_index)


@pytest.mark.parametrize(
    ("verts", "faces", "match"),
    [
        (np.zeros((0, 3)), np.zeros((0, 3), dtype=int), "empty"),
        (np.array([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]]), np.array([[0, 1, 2]]), "NaN"),
        (np.eye(3), np.array([[0, 1, 3]]), "only 3 vertices"),
        (np.eye(3), np.array([[0.0, 1.0, 2.0]]), "integer"),
        (np.eye(3)[:, :2], np.array([[0, 1, 2]]), r"\(N, 3\)"),
    ],
)
def test_malformed_meshes_raise(verts: np.ndarray, faces: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        rasterize(verts, faces, FRONT, 8)


def test_every_vertex_entry_point_rejects_bad_vertices_alike() -> None:
    """Renders, mesh / point-cloud normalisation and OSX bodies share one (N, 3) finite-vertex check."""
    from ivlm_core.fitting.external_body import load_osx_npz
    from ivlm_core.geometry.point_splat import normalize_point_cloud
    from ivlm_core.geometry.shading import normalize_mesh

    def osx(vertices: np.ndarray) -> object:
        return load_osx_npz({"smpl_vertices": vertices[None], "smpl_faces": np.array([[0, 1, 2]]),
                             "bbox_2": np.zeros((1, 4))}, expected_vertices=None)  # fmt: skip

    entry_points = {
        "rasterize": lambda vertices: rasterize(vertices, np.array([[0, 1, 2]]), FRONT, 8),
        "normalize_mesh": normalize_mesh,
        "normalize_point_cloud": normalize_point_cloud,
        "load_osx_npz": osx,
    }
    for name, call in entry_points.items():
        with pytest.raises(InvalidInputError, match="NaN or inf"):
            call(np.array([[0.0, 0, 0], [1, 0, 0], [np.nan, 1, 0]]))
        with pytest.raises(InvalidInputError, match=r"\(N, 3\)"):
            call(np.eye(3)[:, :2])
        assert call(np.eye(3) + 1) is not None, name
    assert checked_vertices([[1, 2, 3]]).dtype == np.float64
    assert checked_vertices(np.zeros((0, 3)), allow_empty=True).shape == (0, 3)
    with pytest.raises(InvalidInputError, match="N > 0"):
        checked_vertices(np.zeros((0, 3)))
    with pytest.raises(InvalidInputError, match="numbers"):
        checked_vertices([["a", "b", "c"]])
    with pytest.raises(InvalidInputError, match="array of numbers"):
        checked_vertices([[1, 2, 3], [1, 2]])


def test_parallel_render_keeps_the_torch_thread_count() -> None:
    """numba's OpenMP launch must not change the thread count a user set for torch."""
    import torch
    import trimesh

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        sphere = trimesh.creation.icosphere(subdivisions=2)
        rasterize_views(sphere.vertices * 0.5, sphere.faces, get_view_set("4MV-Z_Vitru"), 32)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
