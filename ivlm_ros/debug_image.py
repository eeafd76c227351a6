"""The debug image: the input photo with projected contacts, above strips of the 4 model views with masks.

In the 3D modes the model never segments the photo itself: the masks live on the 4 renders of the body/object.
So the strip shows what the model actually predicted, and the photo gets the 3D contacts projected into it
when the body/object was placed in the camera frame (and K is known).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image as PILImage

from ivlm_ros.markers import HUMAN_CONTACT_RGBA, OBJECT_CONTACT_RGBA

_MASK_RGB = np.array([255, 40, 40], dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def view_strip(view_images: np.ndarray, view_logits: np.ndarray, width: int, threshold: float) -> np.ndarray:
    """(tile, width, 3) uint8: the V views side by side, mask (sigmoid(logit) >= threshold) blended in red."""
    num_views = len(view_images)
    tile = max(1, width // max(num_views, 1))
    strip = np.full((tile, width, 3), 255, dtype=np.uint8)
    # Subsample by striding first (1024 px renders -> about twice the tile), so the resize is cheap.
    stride = max(1, int(np.asarray(view_images).shape[1]) // (2 * tile))
    for i in range(num_views):
        small_image = np.ascontiguousarray(np.asarray(view_images[i], dtype=np.uint8)[::stride, ::stride])
        small_logits = np.ascontiguousarray(np.asarray(view_logits[i], dtype=np.float32)[::stride, ::stride])
        image = np.asarray(
            PILImage.fromarray(small_image).resize((tile, tile), PILImage.BILINEAR), np.float32
        )
        logits = np.asarray(PILImage.fromarray(small_logits).resize((tile, tile), PILImage.BILINEAR))
        mask = (_sigmoid(logits) >= threshold)[..., None]
        blended = np.where(mask, 0.4 * image + 0.6 * _MASK_RGB, image)
        strip[:, i * tile : (i + 1) * tile] = blended.astype(np.uint8)
    return strip


def project_points(points: np.ndarray, camera_k: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-frame points (z forward) to pixels [u, v]; points behind are dropped."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    points = points[points[:, 2] > 1e-6]
    uvw = points @ np.asarray(camera_k, dtype=np.float64).T
    return uvw[:, :2] / uvw[:, 2:3]


def draw_dots(image: np.ndarray, pixels: np.ndarray, rgb: np.ndarray, radius: int = 2) -> None:
    """Paint square dots in place (vectorised over points and offsets)."""
    if len(pixels) == 0:
        return
    height, width = image.shape[:2]
    centres = np.rint(pixels).astype(np.int64)
    offsets = np.stack(np.meshgrid(np.arange(-radius, radius + 1), np.arange(-radius, radius + 1)), -1)
    coords = (centres[:, None, :] + offsets.reshape(1, -1, 2)).reshape(-1, 2)
    inside = (coords[:, 0] >= 0) & (coords[:, 0] < width) & (coords[:, 1] >= 0) & (coords[:, 1] < height)
    coords = coords[inside]
    image[coords[:, 1], coords[:, 0]] = rgb


def compose_debug_image(
    rgb: np.ndarray,
    result: Any,
    camera_k: np.ndarray | None,
    human_threshold: float,
    object_threshold: float,
) -> np.ndarray:
    """Input photo (+ projected contacts) stacked over one view strip per estimate (human, object)."""
    canvas = np.array(rgb, dtype=np.uint8, copy=True)
    width = canvas.shape[1]
    contact_2d = getattr(result, "contact_2d", None)
    if contact_2d is not None and contact_2d.logits is not None:  # the 2D model's contact mask, tinted
        mask = contact_2d.mask(human_threshold)
        tint = (HUMAN_CONTACT_RGBA[:3] * 255).astype(np.float32)
        canvas[mask] = (0.45 * canvas[mask] + 0.55 * tint).astype(np.uint8)
    if camera_k is not None:
        body = result.body_placement
        human = result.human
        if body is not None and body.placed and human is not None and human.vertex_contact is not None:
            vertices = np.asarray(body.vertices)
            if len(vertices) == len(human.vertex_contact):
                contact = vertices[np.asarray(human.vertex_contact) >= human_threshold]
                draw_dots(
                    canvas, project_points(contact, camera_k), (HUMAN_CONTACT_RGBA[:3] * 255).astype(np.uint8)
                )
        obj, placement = result.object, result.object_placement
        if obj is not None and placement is not None and placement.placed and obj.vertex_contact is not None:
            vertices = np.asarray(placement.vertices)
            contact = vertices[np.asarray(obj.vertex_contact) >= object_threshold]
            draw_dots(
                canvas, project_points(contact, camera_k), (OBJECT_CONTACT_RGBA[:3] * 255).astype(np.uint8)
            )
    rows = [canvas]
    for estimate, threshold in ((result.human, human_threshold), (result.object, object_threshold)):
        if estimate is not None and estimate.view_images is not None and estimate.view_logits is not None:
            rows.append(view_strip(estimate.view_images, estimate.view_logits, width, threshold))
    return np.concatenate(rows, axis=0)
