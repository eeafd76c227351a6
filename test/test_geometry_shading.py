"""Render styles: normal colours, Phong-lit xyz colours (hand-computed pixel), mesh normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from ivlm_core.errors import InvalidInputError
from ivlm_core.geometry.raster import rasterize
from ivlm_core.geometry.shading import (
    normalize_mesh,
    object_light_location,
    render_views,
    shade_normals,
    shade_xyz_phong,
    vertex_normals,
)
from ivlm_core.geometry.views import CameraView, get_view_set

FRONT = CameraView("front", dist=2.0, elev=0.0, azim=0.0)
# Shifted by (0.01, 0.02) so the image centre (the world origin) is not on the shared diagonal, where an exact
# edge tie would leave a crack (as in PyTorch3D).
_UNIT_SQUARE = np.array([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, 0.5, 0.0], [-0.5, 0.5, 0.0]])
SQUARE = _UNIT_SQUARE + np.array([0.01, 0.02, 0.0])
SQUARE_FACES = np.array([[0, 1, 2], [0, 2, 3]])  # counter-clockwise seen from +z: normal +z


def test_normalize_mesh_centres_and_scales_to_unit_side() -> None:
    verts = np.random.default_rng(0).normal(size=(100, 3)) * [3.0, 1.0, 0.5] + [10.0, -2.0, 4.0]
    out = normalize_mesh(verts)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)
    assert (out.max(axis=0) - out.min(axis=0)).max() == pytest.approx(1.0)
    with pytest.raises(InvalidInputError):
        normalize_mesh(np.ones((4, 3)))


def test_vertex_normals_point_outwards_on_a_sphere() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=2)
    normals = vertex_normals(sphere.vertices, sphere.faces)
    unit = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)
    assert np.min(np.sum(normals * unit, axis=1)) > 0.99


def test_normal_shading_colour_and_white_background() -> None:
    frag = rasterize(SQUARE, SQUARE_FACES, FRONT, 33)
    image = shade_normals(SQUARE, SQUARE_FACES, frag)
    assert image.dtype == np.uint8 and image.shape == (33, 33, 3)
    np.testing.assert_allclose(image[16, 16], [127.5, 127.5, 255], atol=0.5)  # (0,0,1) -> (0.5,0.5,1)
    np.testing.assert_array_equal(image[0, 0], [255, 255, 255])


def test_phong_xyz_shading_matches_hand_computation() -> None:
    # Centre pixel of an odd image samples the world origin: min-max x0.8+0.1 colouring gives
    # texel = (0.49*0.8+0.1, 0.48*0.8+0.1, flat z -> 0.1) = (0.492, 0.484, 0.1); light (0,0,3) and eye (0,0,2)
    # are both along the normal, so diffuse = 0.3, specular = 0.2 * 1^64 and
    # rgb = (0.5 + 0.3) * texel + 0.2 = (0.5936, 0.5872, 0.28) -> (151.4, 149.7, 71.4).
    frag = rasterize(SQUARE, SQUARE_FACES, FRONT, 33)
    image = shade_xyz_phong(SQUARE, SQUARE_FACES, frag, FRONT)
    np.testing.assert_array_equal(image[16, 16], [151, 150, 71])
    np.testing.assert_array_equal(image[0, 0], [255, 255, 255])
    # A light behind the surface leaves only the ambient term.
    dark = shade_xyz_phong(SQUARE, SQUARE_FACES, frag, FRONT, light_location=np.array([0.0, 0.0, -3.0]))
    np.testing.assert_array_equal(dark[16, 16], [63, 62, 13])  # 0.5 * texel


def test_object_lights_follow_the_reference_list() -> None:
    lights = [object_light_location(v)[2] for v in get_view_set("4MV-Z_HM", dist=1.5)]
    assert lights == [3.0, 3.0, -3.0, -3.0]


def test_render_views_shapes_and_styles() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=2)
    verts = normalize_mesh(sphere.vertices)
    for style, views in (("normals", get_view_set("4MV-Z_Vitru")), ("xyz", get_view_set("4MV-Z_HM", 1.5))):
        images, frags = render_views(verts, sphere.faces, views, 32, style=style)
        assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8 and len(frags) == 4
        assert (frags[0].face_index >= 0).any()
    with pytest.raises(InvalidInputError, match="style"):
        render_views(verts, sphere.faces, get_view_set("4MV-Z_Vitru"), 32, style="toon")  # type: ignore[arg-type]
