"""Draw a camera-frame mesh and 2D keypoints over the photo, to check a fit by eye."""

from __future__ import annotations

import numpy as np


def draw_mesh_overlay(
    image_rgb: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    camera_k: np.ndarray,
    color: tuple[int, int, int] = (90, 160, 255),
    alpha: float = 0.6,
) -> np.ndarray:
    """Flat-shaded mesh (painter's algorithm, back faces culled) blended over the image; OpenCV camera frame."""
    import cv2

    canvas = np.ascontiguousarray(image_rgb.copy())
    layer = canvas.copy()
    covered = np.zeros(canvas.shape[:2], dtype=np.uint8)
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    z = v[:, 2]
    uv = (v[:, :2] / np.maximum(z[:, None], 1e-6)) * np.diag(camera_k)[:2] + camera_k[:2, 2]
    tri = v[f]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    centres = tri.mean(axis=1)
    to_camera = -centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    facing = (normals * to_camera).sum(axis=1)
    visible = (facing > 0) & np.all(z[f] > 1e-3, axis=1)
    order = np.flatnonzero(visible)[np.argsort(-centres[visible, 2])]  # far to near
    base = np.asarray(color, dtype=np.float64)
    pixels = np.round(uv * 16).astype(np.int32)  # 4 bits of sub-pixel precision for fillPoly
    for face_index in order:
        shade = 0.35 + 0.65 * facing[face_index]
        fill = tuple(int(c) for c in np.clip(base * shade, 0, 255))
        poly = pixels[f[face_index]][None]
        cv2.fillPoly(layer, poly, fill, lineType=cv2.LINE_AA, shift=4)
        cv2.fillPoly(covered, poly, 1, shift=4)
    mask = covered.astype(bool)
    canvas[mask] = (alpha * layer[mask] + (1 - alpha) * canvas[mask]).astype(np.uint8)
    return canvas


def draw_keypoint_pairs(
    image_rgb: np.ndarray,
    detected: np.ndarray,
    fitted: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """Detected keypoints (green), the fitted body's reprojections (red) and a line between each pair."""
    import cv2

    canvas = np.ascontiguousarray(image_rgb.copy())
    for d, p, w in zip(np.asarray(detected), np.asarray(fitted), np.asarray(weights)):
        if w <= 0:
            continue
        d_px = tuple(int(np.rint(c)) for c in d)
        p_px = tuple(int(np.rint(c)) for c in p)
        cv2.line(canvas, d_px, p_px, (255, 255, 0), 1, cv2.LINE_AA)
        cv2.circle(canvas, d_px, 3, (0, 220, 0), -1, cv2.LINE_AA)
        cv2.circle(canvas, p_px, 2, (230, 30, 30), -1, cv2.LINE_AA)
    return canvas


def draw_turned_view(
    vertices: np.ndarray,
    faces: np.ndarray,
    camera_k: np.ndarray,
    image_size: tuple[int, int],
    yaw_deg: float = 90.0,
    background: int = 255,
) -> np.ndarray:
    """The mesh turned about the camera's vertical axis through its centre, re-framed to fill the view
    (the turned body, not its distance, is what shows the fitted depth and pose)."""
    from scipy.spatial.transform import Rotation

    v = np.asarray(vertices, dtype=np.float64)
    centre = (v.min(axis=0) + v.max(axis=0)) / 2
    turned = (v - centre) @ Rotation.from_euler("y", yaw_deg, degrees=True).as_matrix().T
    extent = float(np.ptp(turned[:, :2], axis=0).max())
    focal = float(min(camera_k[0, 0], camera_k[1, 1]))
    depth = focal * extent / (0.85 * min(image_size)) + float(np.ptp(turned[:, 2])) / 2
    principal_ray = np.linalg.solve(camera_k, [image_size[1] / 2, image_size[0] / 2, 1.0])
    mid = (turned[:, :2].min(axis=0) + turned[:, :2].max(axis=0)) / 2
    turned = turned - np.array([mid[0], mid[1], 0.0]) + principal_ray * depth
    canvas = np.full((*image_size, 3), background, dtype=np.uint8)
    return draw_mesh_overlay(canvas, turned, faces, camera_k, color=(200, 140, 90), alpha=1.0)
