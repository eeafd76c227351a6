"""Where viewers draw meshes that were not placed in the camera: upright, in front of it (optical frame).

Shared by the RViz markers (``ivlm_ros.markers``) and the Rerun recording, so both show the same scene.
"""

from __future__ import annotations

import numpy as np

# Canonical (not fitted) meshes are y-up and face +z; the optical frame is y-down, z-forward:
# rotate 180 degrees about x so the body stands upright and faces the camera.
CANONICAL_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


def display_pose(vertices: np.ndarray, lateral_offset_m: float, distance_m: float) -> np.ndarray:
    """Put a canonical (y-up) mesh upright in front of the camera: centred, at ``distance_m`` along +z."""
    vertices = np.asarray(vertices, dtype=np.float64)
    centred = vertices - vertices.mean(axis=0)
    return centred @ CANONICAL_TO_OPTICAL.T + np.array([lateral_offset_m, 0.0, distance_m])
