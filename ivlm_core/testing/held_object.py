"""A small object held against a box 'torso', with true contacts and its visible mask: the fitting tests' scene.

The torso is a 0.4 x 0.6 x 0.25 m box 1.6 m in front of a 640x480 camera (fx = fy = 600); the object touches
its front face at a given rotation. Contact probabilities fall linearly from 1 at 1 cm to 0 at 3 cm surface
distance on both meshes; the mask is the object's visible part (z-buffered with the torso and an optional
occluder, which joins the "body" mesh so that the fit knows it).
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from ivlm_core.fitting.zbuffer import render_depth

CAMERA_K = np.array([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])


def contact_ramp(distance: np.ndarray) -> np.ndarray:
    return np.clip((0.03 - distance) / 0.02, 0.0, 1.0)


def held_object_scene(
    obj: trimesh.Trimesh, rotation: np.ndarray, occluder: trimesh.Trimesh | None = None
) -> dict[str, np.ndarray]:
    """obj_v/obj_f (object frame), p_obj, body_v/body_f, p_hum, mask (visible), full (unoccluded), rot, trans."""
    torso = trimesh.creation.box((0.4, 0.6, 0.25))
    body_v, body_f = trimesh.remesh.subdivide_to_size(torso.vertices, torso.faces, 0.03)
    body_v = body_v + np.array([0.0, 0.05, 1.6])
    obj_v, obj_f = trimesh.remesh.subdivide_to_size(obj.vertices, obj.faces, 0.012)
    normal = np.array([0.0, 0.0, -1.0])  # the torso's front face looks at the camera
    heights = (obj_v @ rotation.T) @ normal
    trans = np.array([0.05, 0.0, 1.6 - 0.125]) - rotation @ obj_v[np.argmin(heights)] - 0.002 * normal
    posed = obj_v @ rotation.T + trans
    body_pts, _ = trimesh.sample.sample_surface(trimesh.Trimesh(body_v, body_f), 20000, seed=0)
    obj_pts, _ = trimesh.sample.sample_surface(trimesh.Trimesh(posed, obj_f), 5000, seed=0)
    p_obj = contact_ramp(cKDTree(body_pts).query(posed)[0])
    p_hum = contact_ramp(cKDTree(obj_pts).query(body_v)[0])
    if occluder is not None:
        offset = len(body_v)
        body_v = np.concatenate((body_v, occluder.vertices))
        body_f = np.concatenate((body_f, occluder.faces + offset))
        p_hum = np.concatenate((p_hum, np.zeros(len(occluder.vertices))))
    render = render_depth([(body_v, body_f), (posed, obj_f)], CAMERA_K, (480, 640))
    full = render_depth([(posed, obj_f)], CAMERA_K, (480, 640)).mask
    return dict(obj_v=obj_v, obj_f=obj_f, p_obj=p_obj, body_v=body_v, body_f=body_f, p_hum=p_hum,
                mask=render.mesh_index == 1, full=full, rot=rotation, trans=trans)
