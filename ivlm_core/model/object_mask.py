"""Object mask from a box prompt with the model's own SAM (no second segmentation model to load).

The object fit needs a silhouette of the object in the camera image. A detector (or the user) gives a box;
SAM turns it into a mask exactly as the official `SamPredictor.predict(box=...)` does: ResizeLongestSide
preprocessing, the box mapped into the resized frame, decoding with the three ambiguity masks, the mask with
the highest predicted IoU kept, logits brought back to the photo and thresholded at SAM's 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ivlm_core.errors import InvalidInputError
from ivlm_core.model.sam import ContactSam, sam_preprocess

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ObjectMask:
    """SAM's answer for one box: mask (H,W) bool, logits (H,W) float32, predicted IoU, the box used.

    `box` is the prompt after clipping to the image, xyxy in original image pixels.
    """

    mask: np.ndarray
    logits: np.ndarray
    iou: float
    box: Box


def boxes_to_sam_input(
    boxes: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]
) -> np.ndarray:
    """xyxy boxes (B,4) in original pixels -> the resized SAM input frame (official `apply_boxes`).

    `input_size` is the (h,w) that `sam_preprocess` resized the photo to. Like the official transform, x
    scales by new_w/old_w and y by new_h/old_h: after rounding the two ratios can differ slightly from the
    single resize scale, and they are what the pixels actually moved by.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    (old_h, old_w), (new_h, new_w) = original_size, input_size
    ratios = np.array([new_w / old_w, new_h / old_h, new_w / old_w, new_h / old_h])
    return boxes * ratios


def clip_box(box_xyxy: Sequence[float], image_hw: tuple[int, int]) -> Box:
    """Validate a box and clip it to the image; InvalidInputError if nothing of it is left inside."""
    try:
        values = [float(v) for v in np.asarray(box_xyxy, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
        raise InvalidInputError(f"object box must be 4 numbers (x0, y0, x1, y1), got {box_xyxy!r}") from None
    if len(values) != 4:
        raise InvalidInputError(f"object box must be 4 numbers (x0, y0, x1, y1), got {len(values)} values")
    if not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"object box must be finite, got {values}")
    x0, y0, x1, y1 = values
    if not (x1 > x0 and y1 > y0):
        raise InvalidInputError(
            f"object box must be xyxy with x1 > x0 and y1 > y0 (pixels of the original image), got {values}"
        )
    h, w = image_hw
    clipped = (min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w), min(max(y1, 0.0), h))
    if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
        raise InvalidInputError(
            f"object box {values} lies outside the {w}x{h} image (nothing left after clipping to it)"
        )
    return clipped


def _check_image(image_rgb: np.ndarray) -> np.ndarray:
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidInputError(
            f"segment_object expects an RGB uint8 (H,W,3) image, got {image.dtype} {tuple(image.shape)}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidInputError(f"segment_object got an empty image of shape {tuple(image.shape)}")
    return image


def segment_object(
    sam: ContactSam, image_rgb: np.ndarray, box_xyxy: Sequence[float], threshold: float = 0.0
) -> ObjectMask:
    """Segment the object inside `box_xyxy` (original pixels, xyxy) of an RGB uint8 photo.

    The photo is encoded once; mask = logits > threshold (0 is SAM's mask_threshold).
    """
    image = _check_image(image_rgb)
    if not math.isfinite(float(threshold)):
        raise InvalidInputError(f"mask threshold must be finite, got {threshold}")
    original_size = (int(image.shape[0]), int(image.shape[1]))
    box = clip_box(box_xyxy, original_size)
    pixel_values, input_size = sam_preprocess(image, sam.spec)
    sam_box = boxes_to_sam_input(np.array([box]), original_size, input_size)
    with torch.inference_mode():
        embedding = sam.encode_images(pixel_values.unsqueeze(0))
        logits, iou = sam.segment_boxes(
            embedding, torch.from_numpy(sam_box), input_size, original_size, multimask=True
        )
    logits_np = logits[0].cpu().numpy().astype(np.float32, copy=False)
    return ObjectMask(mask=logits_np > threshold, logits=logits_np, iou=float(iou[0]), box=box)
