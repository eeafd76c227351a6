import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from ivlm_core.errors import InvalidInputError
from ivlm_core.fitting.icp import (
    contact_anchored_translations,
    contact_icp,
    contact_icp_batch,
    contact_region_depth,
    mask_centre_translation,
    sample_contact_surface,
    umeyama_rigid,
    umeyama_rigid_batch,
)

K = np.array([[600.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])


def test_mask_centre_uses_columns_for_x_and_rows_for_y():
    mask = np.zeros((480, 640), dtype=bool)
    mask[100:111, 400:421] = True  # centre row 105, column 410
    centre = mask_centre_translation(mask, K, depth=2.0)
    assert np.allclose(centre, [(410 - 320) * 2.0 / 600, (105 - 240) * 2.0 / 500, 2.0])


def test_contact_depth_prefers_confident_vertices():
    verts = np.array([[0, 0, 1.0], [0, 0, 2.0], [0, 0, 3.0]])
    assert contact_region_depth(verts, np.array([0.9, 0.8, 0.1])) == 1.5
    assert np.isclose(contact_region_depth(verts, np.array([0.1, 0.1, 0.2])), 2.25)


def test_anchored_translation_puts_the_turned_object_contact_centroid_on_the_body_one():
    rng = np.random.default_rng(1)
    rots = [Rotation.from_rotvec(v).as_matrix() for v in ([0.3, -1.1, 0.4], [0.0, 2.0, -0.5])]
    obj_points, obj_w = rng.normal(size=(20, 3)), rng.uniform(0.1, 1.0, 20)
    hum_points, hum_w = rng.normal(size=(30, 3)) + np.array([0.0, 0.0, 2.0]), rng.uniform(0.1, 1.0, 30)
    translations = contact_anchored_translations(rots, obj_points, obj_w, hum_points, hum_w)
    assert len(translations) == 2
    for rot, trans in zip(rots, translations):
        placed = obj_points @ rot.T + trans
        assert np.allclose(obj_w @ placed / obj_w.sum(), hum_w @ hum_points / hum_w.sum())
    with pytest.raises(InvalidInputError, match="positive weight"):
        contact_anchored_translations(rots, obj_points, np.zeros(20), hum_points, hum_w)


def test_umeyama_recovers_a_rigid_motion_and_never_reflects():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    rot = Rotation.from_rotvec([0.3, -0.2, 0.9]).as_matrix()
    r, t = umeyama_rigid(src, src @ rot.T + [0.1, 0.2, 0.3])
    assert np.allclose(r, rot) and np.allclose(t, [0.1, 0.2, 0.3])
    r_mirror, _ = umeyama_rigid(src, src * [-1, 1, 1])
    assert np.isclose(np.linalg.det(r_mirror), 1.0)


def _patch(n=12):
    xs, ys = np.meshgrid(np.linspace(-0.05, 0.05, n), np.linspace(-0.05, 0.05, n))
    x, y = xs.ravel(), ys.ravel()
    points = np.stack((x, y, 4.0 * x**2 + 8.0 * y**2 + x * y), 1)  # a curved, non-symmetric bump
    mesh = trimesh.Trimesh(points, _grid_faces(n), process=False)
    return points, np.asarray(mesh.vertex_normals)


def _grid_faces(n):
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            i = r * n + c
            faces += [[i, i + 1, i + n], [i + 1, i + n + 1, i + n]]
    return np.array(faces)


def test_icp_re_estimates_correspondences_and_converges_from_a_shifted_start():
    human_pts, human_normals = _patch(25)
    # the object surface is a sparser copy of the human one, facing the other way (touching surfaces)
    sub = (np.arange(25)[:, None] % 3 == 0) & (np.arange(25)[None, :] % 3 == 0)
    true_t = human_pts.mean(0)
    object_local = human_pts[sub.ravel()] - true_t
    start_rot = Rotation.from_rotvec([0.03, -0.02, 0.06]).as_matrix()
    start_t = true_t + np.array([0.008, -0.006, 0.003])
    normals = -human_normals[sub.ravel()]

    def error(res):
        moved = object_local @ res.rotation.T + res.translation
        return np.linalg.norm(moved - human_pts[sub.ravel()], axis=1).mean()

    start_error = np.linalg.norm(object_local @ start_rot.T + start_t - human_pts[sub.ravel()], axis=1).mean()
    args = (object_local, normals, human_pts, human_normals, start_rot, start_t)
    once = contact_icp(*args, max_iterations=1, normal_weight=0.2)
    full = contact_icp(*args, max_iterations=50, normal_weight=0.2)
    # one Umeyama on the initial correspondences (the reference's frozen kNN) only halves the error;
    # re-matching every iteration with the rotated normals lands exactly
    assert error(once) > 0.3 * start_error
    assert full.iterations > 1 and error(full) < 1e-4
    assert np.allclose(full.rotation, np.eye(3), atol=1e-3) and np.allclose(full.translation, true_t, atol=1e-4)


def test_normal_filter_drops_pairs_that_do_not_oppose():
    human_pts, human_normals = _patch()
    object_local = human_pts - human_pts.mean(0)
    normals = -human_normals.copy()
    normals[: len(normals) // 2] *= -1  # half the object normals point the same way as the body: not touching
    res = contact_icp(object_local, normals, human_pts, human_normals, np.eye(3), human_pts.mean(0),
                      max_iterations=1, max_normal_angle_deg=60)
    assert res.kept_pairs == len(normals) - len(normals) // 2


def test_contact_surface_sampling_stays_in_the_contact_region():
    mesh = trimesh.creation.icosphere(3, 0.1)
    contact = (mesh.vertices[:, 2] > 0.07).astype(float)
    pts, normals, probs = sample_contact_surface(mesh.vertices, mesh.faces, contact, 0.5, count=300)
    assert len(pts) > 50 and (pts[:, 2] > 0.05).all() and (probs > 0.5).all()
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0)


def _icp_one_pose(obj, obj_n, hum, hum_n, rot, trans, w_obj, w_hum, iterations, normal_weight, angle, robust):
    """The ICP written for one start pose, pair subsets taken by boolean indexing: what the batch must equal."""
    from scipy.spatial import cKDTree

    facing = -hum_n
    tree = cKDTree(np.concatenate((hum, normal_weight * facing), axis=1))
    prev, it = np.inf, 0
    for it in range(1, iterations + 1):  # noqa: B007 - the count is returned
        moved, normals = obj @ rot.T + trans, obj_n @ rot.T
        idx = tree.query(np.concatenate((moved, normal_weight * normals), axis=1))[1]
        agree = (normals * facing[idx]).sum(1) > np.cos(np.radians(angle))
        if agree.sum() < 3:
            agree[:] = True
        w = w_obj[agree] * w_hum[idx[agree]]
        w = w * (robust**2 / (robust**2 + ((moved[agree] - hum[idx[agree]]) ** 2).sum(1))) ** 2
        rot, trans = umeyama_rigid(obj[agree], hum[idx[agree]], w)
        rmse = np.sqrt((w * ((obj[agree] @ rot.T + trans - hum[idx[agree]]) ** 2).sum(1)).sum() / w.sum())
        if abs(prev - rmse) < 1e-5:
            break
        prev = rmse
    return rot, trans, it, rmse


def test_batched_icp_equals_each_start_alone():
    """The multi-hypothesis start runs ICP from ~40 poses in one batch: each one's result (pose, iterations,
    error) is the one-pose algorithm's, early stops included."""
    mesh = trimesh.creation.icosphere(3, 0.1)
    contact = (mesh.vertices[:, 2] > 0.06).astype(float)
    hum, hum_n, hum_p = sample_contact_surface(mesh.vertices, mesh.faces, contact, 0.5, count=300, seed=2)
    rng = np.random.default_rng(3)
    obj = hum[:60] - hum[:60].mean(0) + rng.normal(scale=0.002, size=(60, 3))
    obj_n = -hum_n[:60]
    w_obj = rng.uniform(0.2, 1.0, 60)
    rots = np.stack([Rotation.from_rotvec(rng.normal(scale=0.4, size=3)).as_matrix() for _ in range(7)])
    trans = hum[:60].mean(0) + rng.normal(scale=0.02, size=(7, 3))
    batch = contact_icp_batch(obj, obj_n, hum, hum_n, rots, trans, w_obj, hum_p, 15, 0.05, 60.0,
                              robust_scale_m=0.03)
    iterations = set()
    for b, got in enumerate(batch):
        rot, t, it, rmse = _icp_one_pose(obj, obj_n, hum, hum_n, rots[b], trans[b], w_obj, hum_p, 15, 0.05, 60.0,
                                         0.03)
        np.testing.assert_allclose(got.rotation, rot, atol=1e-9)
        np.testing.assert_allclose(got.translation, t, atol=1e-9)
        assert got.iterations == it and np.isclose(got.rmse, rmse, rtol=1e-9)
        iterations.add(it)
    assert len(iterations) > 1  # the starts stopped at different iterations
    single = contact_icp(obj, obj_n, hum, hum_n, rots[2], trans[2], w_obj, hum_p, 15, 0.05, 60.0,
                         robust_scale_m=0.03)
    np.testing.assert_allclose(single.rotation, batch[2].rotation, atol=1e-12)


def test_batched_umeyama_leaves_out_zero_weight_pairs():
    rng = np.random.default_rng(4)
    src = rng.normal(size=(2, 30, 3))
    rot = Rotation.from_rotvec([0.2, -0.5, 0.9]).as_matrix()
    dst = src @ rot.T + [0.1, 0.0, -0.2]
    dst[:, :5] += 5.0  # outliers, weighted 0
    weights = np.ones((2, 30))
    weights[:, :5] = 0.0
    r, t = umeyama_rigid_batch(src, dst, weights)
    np.testing.assert_allclose(r, np.stack([rot, rot]), atol=1e-10)
    np.testing.assert_allclose(t, [[0.1, 0.0, -0.2]] * 2, atol=1e-10)
