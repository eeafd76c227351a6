"""The object fit's contact-label likelihood and the body surface it measures distances to."""

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation

from ivlm_core.fitting import object_fit as of
from ivlm_core.testing.held_object import CAMERA_K as K
from ivlm_core.testing.held_object import held_object_scene


@pytest.fixture(scope="module")
def cylinder():
    """A cylinder lying against the torso: its labels say touched on the side that faces the body only."""
    rot = Rotation.from_euler("xyz", [80, 10, 0], degrees=True).as_matrix()
    return held_object_scene(trimesh.creation.cylinder(radius=0.03, height=0.16, sections=24), rot)


def _scene(s, cfg):
    centre = s["obj_v"].mean(0)
    return of._prepare(cfg, s["obj_v"] - centre, s["obj_f"], s["p_obj"], s["body_v"], s["body_f"], s["p_hum"],
                       s["mask"], K, use_occlusion=False), centre


def _losses_at(scene, cfg, rotations, translations):
    rot = torch.tensor(np.stack(rotations), dtype=torch.float32)
    trans = torch.tensor(np.stack(translations), dtype=torch.float32)
    with torch.no_grad():
        return of._losses(scene, cfg, rot, trans, torch.ones(len(rot)), None)


def test_body_surface_distance_is_signed_and_stops_at_reach():
    box = trimesh.creation.box((0.2, 0.2, 0.2))
    vertices, faces = trimesh.remesh.subdivide_to_size(box.vertices, box.faces, 0.02)
    surface = of._BodySurface.sample(vertices, faces, 20000, seed=0)
    points = torch.tensor([[0.0, 0.0, 0.13], [0.0, 0.0, 0.07], [0.0, 0.0, 0.5], [0.0, 0.13, 0.0]])
    nearest = surface.nearest(points, reach=0.1)
    assert nearest[2] == -1 and (nearest[[0, 1, 3]] >= 0).all()
    signed = surface.signed_distance(points, nearest, reach=0.1)
    # 3 cm outside (face samples are a few mm apart), 3 cm inside, and beyond reach: reach, no gradient
    np.testing.assert_allclose(signed.numpy(), [0.03, -0.03, 0.1, 0.03], atol=0.004)
    # only the faces near the given points are sampled: every sample lies within the radius of one
    near = of._BodySurface.sample(vertices, faces, 2000, seed=0, near=np.array([[0.1, 0.0, 0.0]]), radius=0.05)
    assert float(near.points[:, 0].min()) > 0.1 - 0.05 - 0.021  # a kept face reaches at most one edge further


def test_test_points_take_the_touched_vertices_first_and_stand_for_the_whole_mesh():
    cfg = of.FitConfig(object_test_points=64)
    p = np.zeros(1000)
    p[:20] = 0.9
    idx, weight = of._test_points(p, cfg, np.random.default_rng(0))
    assert len(idx) == 64 and set(range(20)) <= set(idx.tolist())
    assert weight.sum() == pytest.approx(1.0)
    assert weight[np.isin(idx, np.arange(20))].sum() == pytest.approx(0.02)  # their share of the mesh


def test_contact_labels_tell_a_cylinders_rolls_apart(cylinder):
    """The silhouette and (within its 1 cm tolerance) the contact term barely change when the cylinder rolls about
    its axis; its labels do: rolled, the touched side leaves the body and the untouched one lands on it."""
    cfg = of.FitConfig()
    scene, centre = _scene(cylinder, cfg)
    rot = cylinder["rot"]
    trans = rot @ centre + cylinder["trans"]
    rolls = [rot @ Rotation.from_euler("z", a, degrees=True).as_matrix() for a in (0, 30, 90, 180)]
    labels = _losses_at(scene, cfg, rolls, [trans] * 4)["labels"].numpy()
    assert labels[0] < labels[1] < labels[2] and labels[0] < labels[3]
    assert labels[3] - labels[0] > 0.05


def test_label_term_prefers_the_true_pose_to_one_pressed_flat_against_the_body():
    """A box held by an edge: its labels say touched along that edge. Tipped flat onto its face, more of it is
    near the body (what the contact term alone rewards), and the labels say that face is not touched."""
    rot = Rotation.from_euler("xyz", [0, 45, 0], degrees=True).as_matrix()
    s = held_object_scene(trimesh.creation.box((0.14, 0.08, 0.05)), rot)
    cfg = of.FitConfig()
    scene, centre = _scene(s, cfg)
    true_t = rot @ centre + s["trans"]
    flat = np.eye(3)  # the 14 x 8 cm face towards the torso, touching it where the edge did
    deepest = float(((s["obj_v"] - centre) @ rot.T)[:, 2].max())
    flat_t = true_t + np.array([0.0, 0.0, deepest - 0.025])
    losses = _losses_at(scene, cfg, [rot, flat], [true_t, flat_t])
    assert float(losses["labels"][0]) < float(losses["labels"][1])


def test_a_flipped_label_costs_at_most_the_outlier_bound(cylinder):
    """Each label is an outlier with probability label_outlier_rate, so one vertex's wrong label costs at most
    -log(rate / 2) times its share of the mesh, however far it is from the body."""
    cfg = of.FitConfig(object_test_points=4000)  # every vertex
    scene, centre = _scene(cylinder, cfg)
    rot = cylinder["rot"]
    trans = rot @ centre + cylinder["trans"]
    base = float(_losses_at(scene, cfg, [rot], [trans])["labels"][0])
    depth = scene.test_local @ torch.tensor(rot.T, dtype=torch.float32) @ torch.tensor([0.0, 0.0, 1.0])
    far = int(torch.argmin(depth))  # the vertex nearest the camera: farthest from the torso behind
    scene.test_p[far] = 1.0  # a false "touched" on the far side
    flipped = float(_losses_at(scene, cfg, [rot], [trans])["labels"][0])
    bound = -np.log(cfg.label_outlier_rate / 2) * float(scene.test_weight[far])
    assert 0.5 * bound < flipped - base <= bound + 1e-6
