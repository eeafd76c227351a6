"""Render styles: Phong-lit normal and xyz colours (hand-computed pixels and an independent re-statement of
PyTorch3D's HardPhongShader), the reference's lights and uint8 truncation, mesh normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from ivlm_core.errors import InvalidInputError
from ivlm_core.geometry.raster import rasterize
from ivlm_core.geometry.shading import (
    HUMAN_LIGHTS,
    camera_side_light,
    human_light_location,
    normalize_mesh,
    render_views,
    shade_normals,
    shade_xyz_phong,
    to_uint8,
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
    # normal (0,0,1) -> texel (0.5,0.5,1); light (0,0,3) and eye (0,0,2) along the normal:
    # (0.5 + 0.3) * texel + 0.2 = (0.6, 0.6, 1.0) -> * 255 = (153, 153, 255), truncated: 0.6 sits exactly on an
    # integer, so the last-bit error of the interpolation decides between 152 and 153 (as in the reference).
    frag = rasterize(SQUARE, SQUARE_FACES, FRONT, 33)
    image = shade_normals(SQUARE, SQUARE_FACES, frag, FRONT)
    assert image.dtype == np.uint8 and image.shape == (33, 33, 3)
    assert image[16, 16, 0] in (152, 153) and image[16, 16, 0] == image[16, 16, 1] and image[16, 16, 2] == 255
    np.testing.assert_array_equal(image[0, 0], [255, 255, 255])
    dark = shade_normals(SQUARE, SQUARE_FACES, frag, FRONT, light_location=np.array([0.0, 0.0, -3.0]))
    np.testing.assert_array_equal(dark[16, 16], [63, 63, 127])  # ambient only: 0.5 * (0.5,0.5,1) * 255


def test_uint8_conversion_truncates_like_the_reference() -> None:
    values = np.array([0.0, 0.2, 0.5, 0.999, 1.0, 1.2, -0.1])
    expected = (np.clip(values, 0, 1).astype(np.float32) * 255).astype(np.uint8)  # reference: (x*255).astype
    np.testing.assert_array_equal(to_uint8(values), expected)
    np.testing.assert_array_equal(to_uint8(values), [0, 51, 127, 254, 255, 255, 0])  # rounding gives 128, 255


def test_phong_xyz_shading_matches_hand_computation() -> None:
    # Centre pixel of an odd image samples the world origin: min-max x0.8+0.1 colouring gives
    # texel = (0.49*0.8+0.1, 0.48*0.8+0.1, flat z -> 0.1) = (0.492, 0.484, 0.1); light (0,0,3) and eye (0,0,2)
    # are both along the normal, so diffuse = 0.3, specular = 0.2 * 1^64 and
    # rgb = (0.5 + 0.3) * texel + 0.2 = (0.5936, 0.5872, 0.28) -> (151.4, 149.7, 71.4).
    # Truncated to uint8 as the reference does (rounding would give 151, 150, 71).
    frag = rasterize(SQUARE, SQUARE_FACES, FRONT, 33)
    image = shade_xyz_phong(SQUARE, SQUARE_FACES, frag, FRONT)
    np.testing.assert_array_equal(image[16, 16], [151, 149, 71])
    np.testing.assert_array_equal(image[0, 0], [255, 255, 255])
    # A light behind the surface leaves only the ambient term: 0.5 * texel * 255 = (62.7, 61.7, 12.75).
    dark = shade_xyz_phong(SQUARE, SQUARE_FACES, frag, FRONT, light_location=np.array([0.0, 0.0, -3.0]))
    np.testing.assert_array_equal(dark[16, 16], [62, 61, 12])


def test_object_lights_follow_the_reference_list() -> None:
    lights = [camera_side_light(v)[2] for v in get_view_set("4MV-Z_HM", dist=1.5)]
    assert lights == [3.0, 3.0, -3.0, -3.0]


def test_human_lights_follow_the_reference_pairing() -> None:
    # generate_damon_human_mask.py: LIGHT_LOCATIONS [[0,0,3],[0,0,-3],[0,0,-3],[0,0,3]] zipped with the views
    # topfront, topback, bottomfront, bottomback.
    lights = {v.name: human_light_location(v)[2] for v in get_view_set("4MV-Z_Vitru")}
    assert lights == {"topfront": 3.0, "bottomfront": -3.0, "topback": -3.0, "bottomback": 3.0}
    assert set(HUMAN_LIGHTS) == set(lights)


def _pytorch3d_hard_phong(verts, faces, colours, frag, view, light) -> np.ndarray:
    """A direct re-statement of PyTorch3D's HardPhongShader (shading.py: phong_shading, lighting.py:
    diffuse/specular, PointLights defaults ambient 0.5 / diffuse 0.3 / specular 0.2, Materials shininess 64,
    hard_rgb_blend on a white background), in torch, per pixel, from the rasterizer's barycentrics."""
    import torch
    import torch.nn.functional as F

    from ivlm_core.geometry.views import camera_position

    v = torch.as_tensor(verts, dtype=torch.float64)
    f = torch.as_tensor(faces, dtype=torch.int64)
    # Meshes.verts_normals_packed: sum of the (unnormalised) face normals at each vertex, then normalised.
    face_n = torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=1)
    vn = torch.zeros_like(v).index_add_(0, f[:, 0], face_n).index_add_(0, f[:, 1], face_n)
    vn = F.normalize(vn.index_add_(0, f[:, 2], face_n), eps=1e-6, dim=1)
    pix_faces = torch.as_tensor(frag.face_index)
    fg = pix_faces >= 0
    bary = torch.as_tensor(frag.bary, dtype=torch.float64)[fg]  # (P,3)
    corner = f[pix_faces[fg]]  # (P,3)

    def interpolate(attr: torch.Tensor) -> torch.Tensor:  # interpolate_face_attributes
        return (bary[..., None] * attr[corner]).sum(dim=1)

    points = interpolate(v)
    normals = F.normalize(interpolate(vn), p=2, dim=-1, eps=1e-6)
    texels = interpolate(torch.as_tensor(colours, dtype=torch.float64))
    direction = F.normalize(torch.as_tensor(light, dtype=torch.float64) - points, p=2, dim=-1, eps=1e-6)
    ambient = 0.5 * 1.0  # light.ambient_color * material.ambient_color
    diffuse = 0.3 * 1.0 * F.relu((normals * direction).sum(-1))
    cos_angle = (normals * direction).sum(-1)
    view_direction = F.normalize(
        torch.as_tensor(camera_position(view), dtype=torch.float64) - points, p=2, dim=-1, eps=1e-6
    )
    reflect = -direction + 2 * (cos_angle[..., None] * normals)
    alpha = F.relu((view_direction * reflect).sum(-1)) * (cos_angle > 0)
    specular = 0.2 * 1.0 * torch.pow(alpha, 64.0)
    colour = (ambient + diffuse)[..., None] * texels + specular[..., None]
    image = torch.ones((*pix_faces.shape, 3), dtype=torch.float64)
    image[fg] = colour
    return (image.float().numpy() * 255).astype(np.uint8)  # the reference's uint8 conversion


def test_phong_renders_match_a_restatement_of_pytorch3d_hard_phong() -> None:
    from ivlm_core.geometry.raster import rasterize_views
    from ivlm_core.geometry.shading import normal_vertex_colours, xyz_vertex_colours

    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    verts = np.asarray(mesh.vertices) * [0.6, 1.0, 0.8] + [0.05, -0.02, 0.03]  # not a sphere: lights matter
    faces = np.asarray(mesh.faces)
    for style, views, colours, light_of in (
        ("normals", get_view_set("4MV-Z_Vitru"), normal_vertex_colours(verts, faces), human_light_location),
        ("xyz", get_view_set("4MV-Z_HM", 1.5), xyz_vertex_colours(verts), camera_side_light),
    ):
        ours, _ = render_views(verts, faces, views, 48, style=style)
        frags = rasterize_views(verts, faces, views, 48)
        for v, view in enumerate(views):
            theirs = _pytorch3d_hard_phong(verts, faces, colours, frags[v], view, light_of(view))
            diff = np.abs(ours[v].astype(int) - theirs.astype(int))
            assert diff.max() <= 1 and diff.mean() < 0.01, (style, view.name, diff.max(), diff.mean())
            assert (theirs < 255).any()


def test_render_views_shapes_and_styles() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=2)
    verts = normalize_mesh(sphere.vertices)
    for style, views in (("normals", get_view_set("4MV-Z_Vitru")), ("xyz", get_view_set("4MV-Z_HM", 1.5))):
        images, frags = render_views(verts, sphere.faces, views, 32, style=style)
        assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8 and len(frags) == 4
        assert (frags[0].face_index >= 0).any()
    with pytest.raises(InvalidInputError, match="style"):
        render_views(verts, sphere.faces, get_view_set("4MV-Z_Vitru"), 32, style="toon")  # type: ignore[arg-type]
