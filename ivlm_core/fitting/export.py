"""Export a fitted human-object scene: a contact-coloured ``.glb`` and a PNG overlay on the camera image.

Both work in the camera frame (OpenCV axes, metres), so the overlay is a plain z-buffered projection with the
true intrinsics and the glb opens with the camera at the origin looking down +z.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from ivlm_core.errors import InvalidInputError
from ivlm_core.fitting.zbuffer import render_depth

HUMAN_RGB = (200, 200, 200)
OBJECT_RGB = (110, 160, 220)
CONTACT_RGB = (230, 40, 40)


@dataclass
class ColouredMesh:
    vertices: np.ndarray  # (N,3) camera frame, metres
    faces: np.ndarray  # (F,3)
    colours: np.ndarray  # (N,3) uint8


def contact_colours(
    contact: np.ndarray | None, count: int, base_rgb: tuple[int, int, int], contact_rgb=CONTACT_RGB
) -> np.ndarray:
    """(N,3) uint8: the base colour blended towards the contact colour by the (soft) contact probability."""
    base = np.asarray(base_rgb, dtype=np.float64)
    if contact is None:
        return np.tile(base, (count, 1)).astype(np.uint8)
    prob = np.clip(np.asarray(contact, dtype=np.float64).reshape(-1), 0.0, 1.0)
    if prob.shape[0] != count:
        raise InvalidInputError(f"contact has {prob.shape[0]} values for a mesh of {count} vertices")
    colours = base[None] * (1.0 - prob[:, None]) + np.asarray(contact_rgb, dtype=np.float64)[None] * prob[:, None]
    return np.round(colours).astype(np.uint8)


def scene_meshes(
    human_vertices: np.ndarray | None, human_faces: np.ndarray | None, human_contact: np.ndarray | None,
    object_vertices: np.ndarray | None, object_faces: np.ndarray | None, object_contact: np.ndarray | None,
) -> list[ColouredMesh]:
    """The human and/or object as contact-coloured meshes (either may be None)."""
    meshes = []
    for verts, faces, contact, base in (
        (human_vertices, human_faces, human_contact, HUMAN_RGB),
        (object_vertices, object_faces, object_contact, OBJECT_RGB),
    ):
        if verts is None or faces is None:
            continue
        verts = np.asarray(verts, dtype=np.float64)
        colours = contact_colours(contact, len(verts), base)
        meshes.append(ColouredMesh(verts, np.asarray(faces, dtype=np.int64), colours))
    if not meshes:
        raise InvalidInputError("nothing to export: neither a human nor an object mesh was given")
    return meshes


def export_glb(path: str | Path, meshes: list[ColouredMesh]) -> Path:
    """Write the meshes with per-vertex colours as one binary glTF file (vertex order kept)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scene = trimesh.Scene()
    for i, mesh in enumerate(meshes):
        alpha = np.full((len(mesh.colours), 1), 255, dtype=np.uint8)
        tm = trimesh.Trimesh(
            mesh.vertices, mesh.faces, vertex_colors=np.hstack((mesh.colours, alpha)), process=False
        )
        scene.add_geometry(tm, geom_name=("human", "object")[i] if len(meshes) == 2 else f"mesh_{i}")
    path.write_bytes(scene.export(file_type="glb"))
    return path


def render_overlay(
    image_rgb: np.ndarray, meshes: list[ColouredMesh], camera_k: np.ndarray, alpha: float = 0.7
) -> np.ndarray:
    """(H,W,3) uint8: the meshes z-buffered with intrinsics K, headlight-shaded, blended over the image."""
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(f"expected an (H, W, 3) image, got {image.shape}")
    render = render_depth([(m.vertices, m.faces) for m in meshes], camera_k, image.shape[:2])
    out = image.astype(np.float64).copy()
    for index, mesh in enumerate(meshes):
        hit = render.mesh_index == index
        if not hit.any():
            continue
        faces = mesh.faces[render.face_index[hit]]
        tri = mesh.vertices[faces]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        view = tri.mean(axis=1)
        view /= np.maximum(np.linalg.norm(view, axis=1, keepdims=True), 1e-12)
        shade = 0.35 + 0.65 * np.abs((normal * view).sum(axis=1))  # headlight, two-sided
        colour = mesh.colours[faces].astype(np.float64).mean(axis=1) * shade[:, None]
        out[hit] = (1.0 - alpha) * out[hit] + alpha * colour
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def save_overlay_png(path: str | Path, image_rgb: np.ndarray, meshes: list[ColouredMesh], camera_k: np.ndarray,
                     alpha: float = 0.7) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_overlay(image_rgb, meshes, camera_k, alpha)).save(path)
    return path
