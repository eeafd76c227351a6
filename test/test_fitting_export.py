import numpy as np
import trimesh
from PIL import Image

from ivlm_core.fitting.export import contact_colours, export_glb, render_overlay, save_overlay_png, scene_meshes

K = np.array([[300.0, 0.0, 80.0], [0.0, 300.0, 60.0], [0.0, 0.0, 1.0]])


def _meshes():
    human = trimesh.creation.box((0.3, 0.3, 0.1))
    obj = trimesh.creation.icosphere(2, 0.05)
    human_v = np.asarray(human.vertices) + np.array([0.0, 0.0, 2.0])
    obj_v = np.asarray(obj.vertices) + np.array([0.2, 0.0, 1.9])
    h_contact = np.zeros(len(human_v))
    h_contact[0] = 1.0
    return scene_meshes(human_v, human.faces, h_contact, obj_v, obj.faces, np.ones(len(obj_v)))


def test_contact_colours_blend_by_probability():
    colours = contact_colours(np.array([0.0, 1.0, 0.5]), 3, (100, 100, 100), (200, 0, 0))
    assert colours.tolist() == [[100, 100, 100], [200, 0, 0], [150, 50, 50]]


def test_glb_round_trip_keeps_vertex_order_and_colours(tmp_path):
    meshes = _meshes()
    path = export_glb(tmp_path / "scene.glb", meshes)
    loaded = trimesh.load(path, process=False)
    geoms = {name: g for name, g in loaded.geometry.items()}
    assert set(geoms) == {"human", "object"}
    human = geoms["human"]
    assert len(human.vertices) == len(meshes[0].vertices)
    assert np.allclose(human.visual.vertex_colors[0, :3], [230, 40, 40])  # the contact vertex is red


def test_overlay_draws_only_where_meshes_project(tmp_path):
    image = np.full((120, 160, 3), 30, dtype=np.uint8)
    out = render_overlay(image, _meshes(), K)
    assert (out[60, 80] != 30).any()  # the box covers the centre
    assert (out[2, 2] == 30).all()
    path = save_overlay_png(tmp_path / "overlay.png", image, _meshes(), K)
    assert np.array_equal(np.asarray(Image.open(path)), out)
