"""The two render styles SAM was trained on: Phong-lit normal-coloured humans and xyz-coloured objects.

The SAM decoder only ever saw these exact images, so they follow the reference renderer (PyTorch3D
`TexturesVertex` + `HardPhongShader`, one point light, white background) rather than anything prettier. Both
styles share the lighting: ambient 0.5, diffuse 0.3, specular 0.2, material shininess 64, evaluated in world
space per pixel (Phong: interpolated position and normal), colour = (ambient + diffuse) * texel + specular.
* human ('normals'): texel (n + 1) / 2 of the area-weighted vertex normal. The light of each view is the
  reference's `LIGHT_LOCATIONS[i]` of its i-th view (`generate_damon_human_mask.py`), see `HUMAN_LIGHTS`;
* object ('xyz'): texel = per-axis min-max normalised vertex xyz * 0.8 + 0.1, light at (0,0,3) for the two
  front views and (0,0,-3) for the two back views, i.e. on the camera's side of z = 0 (`camera_side_light`).
Float colours become uint8 as the reference does, `(image * 255).astype(np.uint8)` on float32: truncation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ivlm_core.errors import InvalidInputError
from ivlm_core.geometry.raster import Fragments, checked_vertices, rasterize_views, validate_mesh
from ivlm_core.geometry.views import CameraView, camera_center, camera_position

AMBIENT = 0.5
DIFFUSE = 0.3
SPECULAR = 0.2
SHININESS = 64.0
LIGHT_DISTANCE = 3.0
_NORMAL_EPS = 1e-6
HUMAN_LIGHTS = {
    "topfront": (0.0, 0.0, LIGHT_DISTANCE),
    "topback": (0.0, 0.0, -LIGHT_DISTANCE),
    "bottomfront": (0.0, 0.0, -LIGHT_DISTANCE),
    "bottomback": (0.0, 0.0, LIGHT_DISTANCE),
}
"""Light per human view. The reference pairs LIGHT_LOCATIONS [[0,0,3],[0,0,-3],[0,0,-3],[0,0,3]] with its view
dict in the order topfront, topback, bottomfront, bottomback, so the two bottom views are lit from the far side
of the body. The shipped renders were made that way, so ivlm's fallback render does the same."""


def normalize_mesh(vertices: np.ndarray) -> np.ndarray:
    """Centre on the vertex mean, scale so the largest bounding-box side is 1 (reference normalize_mesh)."""
    verts = checked_vertices(vertices, fix="clean the mesh before normalising")
    centred = verts - verts.mean(axis=0)
    side = float((verts.max(axis=0) - verts.min(axis=0)).max())
    if side <= 0.0:
        raise InvalidInputError("Mesh has zero extent (all vertices coincide); it cannot be normalised.")
    return centred / side


def _unit(vectors: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norm, _NORMAL_EPS)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N,3) unit vertex normals: sum of incident face normals weighted by face area (PyTorch3D's rule)."""
    verts, tris = validate_mesh(vertices, faces)
    corners = verts[tris]
    face_n = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    acc = np.zeros_like(verts)
    for k in range(3):
        np.add.at(acc, tris[:, k], face_n)
    return _unit(acc)


def _check_fragments(frag: Fragments, num_vertices: int) -> None:
    if frag.pixel_to_vertex.ndim != 3 or frag.pixel_to_vertex.shape[2] != 3:
        raise InvalidInputError(
            f"Fragments.pixel_to_vertex must be (H, W, 3), got {frag.pixel_to_vertex.shape}."
        )
    if frag.pixel_to_vertex.max(initial=-1) >= num_vertices:
        raise InvalidInputError(
            "Fragments reference vertices beyond this mesh; were they rasterized from it?"
        )


def interpolate_vertex_attribute(attribute: np.ndarray, frag: Fragments) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric interpolation of a per-vertex (N, C) attribute: ((H,W,C) values, (H,W) foreground mask)."""
    _check_fragments(frag, attribute.shape[0])
    mask = frag.face_index >= 0
    out = np.zeros((*mask.shape, attribute.shape[1]), dtype=np.float64)
    ids = frag.pixel_to_vertex[mask]
    weights = frag.bary[mask].astype(np.float64)
    out[mask] = np.einsum("pk,pkc->pc", weights, attribute[ids])
    return out, mask


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float colours in [0, 1] -> uint8 by truncation of float32 x * 255, exactly like the reference."""
    return (np.clip(rgb, 0.0, 1.0).astype(np.float32) * np.float32(255.0)).astype(np.uint8)


def normal_vertex_colours(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Human SAM-input colours: (vertex normal + 1) / 2."""
    return (vertex_normals(vertices, faces) + 1.0) / 2.0


def shade_normals(
    vertices: np.ndarray, faces: np.ndarray, frag: Fragments, view: CameraView, light_location: np.ndarray | None = None
) -> np.ndarray:
    """Human style: normal colours under HardPhong point lighting (the view's reference light); uint8 (H,W,3)."""
    light = human_light_location(view) if light_location is None else light_location
    return shade_phong(vertices, faces, frag, view, normal_vertex_colours(vertices, faces), light)


def xyz_vertex_colours(vertices: np.ndarray) -> np.ndarray:
    """Object SAM-input colours: per-axis min-max normalised xyz * 0.8 + 0.1 (flat axes give 0.1)."""
    verts = np.asarray(vertices, dtype=np.float64)
    lo = verts.min(axis=0)
    span = verts.max(axis=0) - lo
    return (verts - lo) / np.where(span > 0, span, 1.0) * 0.8 + 0.1


def camera_side_light(view: CameraView) -> np.ndarray:
    """(0, 0, +-3) on the camera's side of z = 0: the reference's per-view lights for the object views."""
    side = 1.0 if camera_center(view)[2] >= 0 else -1.0
    return np.array([0.0, 0.0, side * LIGHT_DISTANCE])


def human_light_location(view: CameraView) -> np.ndarray:
    """The reference light of a human view (`HUMAN_LIGHTS`); the camera's side for views it never rendered."""
    if view.name in HUMAN_LIGHTS:
        return np.array(HUMAN_LIGHTS[view.name])
    return camera_side_light(view)


def shade_phong(
    vertices: np.ndarray,
    faces: np.ndarray,
    frag: Fragments,
    view: CameraView,
    vertex_colours: np.ndarray,
    light_location: np.ndarray,
) -> np.ndarray:
    """PyTorch3D HardPhongShader with one PointLight (ambient 0.5, diffuse 0.3, specular 0.2) and the default
    material (shininess 64) on per-vertex colours, white background; uint8 (H,W,3)."""
    verts, tris = validate_mesh(vertices, faces)
    light = np.asarray(light_location, np.float64)
    texel, mask = interpolate_vertex_attribute(np.asarray(vertex_colours, np.float64), frag)
    points, _ = interpolate_vertex_attribute(verts, frag)
    normals, _ = interpolate_vertex_attribute(vertex_normals(verts, tris), frag)
    normals = _unit(normals)
    to_light = _unit(light - points)
    cos_angle = np.sum(normals * to_light, axis=-1)
    diffuse = DIFFUSE * np.maximum(cos_angle, 0.0)
    to_eye = _unit(camera_position(view) - points)
    reflect = -to_light + 2.0 * cos_angle[..., None] * normals
    alpha = np.maximum(np.sum(to_eye * reflect, axis=-1), 0.0) * (cos_angle > 0)
    specular = SPECULAR * alpha**SHININESS
    rgb = (AMBIENT + diffuse)[..., None] * texel + specular[..., None]
    rgb[~mask] = 1.0
    return to_uint8(rgb)


def shade_xyz_phong(
    vertices: np.ndarray,
    faces: np.ndarray,
    frag: Fragments,
    view: CameraView,
    light_location: np.ndarray | None = None,
) -> np.ndarray:
    """Object style: xyz vertex colours under HardPhong point lighting, white background; uint8 (H,W,3)."""
    light = camera_side_light(view) if light_location is None else light_location
    verts = np.asarray(vertices, dtype=np.float64)
    return shade_phong(vertices, faces, frag, view, xyz_vertex_colours(verts), light)


def render_views(
    vertices: np.ndarray,
    faces: np.ndarray,
    views: Sequence[CameraView],
    image_size: int = 1024,
    style: Literal["normals", "xyz"] = "normals",
) -> tuple[np.ndarray, list[Fragments]]:
    """Rasterize and shade every view: (images uint8 (V,H,W,3), fragments). Normalise object meshes first."""
    if style not in ("normals", "xyz"):
        raise InvalidInputError(f"Unknown render style '{style}'; use 'normals' (human) or 'xyz' (object).")
    frags = rasterize_views(vertices, faces, views, image_size)
    if style == "normals":
        images = [shade_normals(vertices, faces, frag, view) for frag, view in zip(frags, views)]
    else:
        images = [shade_xyz_phong(vertices, faces, frag, view) for frag, view in zip(frags, views)]
    return np.stack(images), frags
