"""A crop around one person for the VLM, with the crop's own camera intrinsics.

Why: InteractVLM was trained on single-person crops, so each tracked person goes to the model as a crop; the
contacts and body placement stay metric only if the crop keeps a correct pinhole camera. Cropping shifts the
principal point by the crop's top-left corner, resizing scales focal lengths and principal point alike. Pixel
centres sit at integer coordinates (the OpenCV / ROS convention), and a resize maps pixel centres the way PIL
and OpenCV do, so u_crop = scale * (u - x0 + 0.5) - 0.5 (a pure shift when scale = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ivlm_core.errors import InvalidInputError
from ivlm_core.tracking.person_box import PersonBox


@dataclass
class PersonCrop:
    """The crop image, its intrinsics and the pixel maps between crop and full image."""

    image: np.ndarray  # (h, w, 3) uint8, zero padded where the crop leaves the image
    camera_k: np.ndarray | None  # (3, 3) float64 intrinsics of the crop (None when no K was given)
    offset: tuple[float, float]  # (x, y) of the crop's top-left corner in full-image pixels
    scale: float  # crop pixels per full-image pixel
    box: PersonBox  # the cropped region in full-image pixels (may extend past the image)

    def to_full_image(self, points: np.ndarray) -> np.ndarray:
        """Crop pixel coordinates (..., 2) -> full-image pixel coordinates."""
        return (np.asarray(points, dtype=np.float64) + 0.5) / self.scale - 0.5 + np.asarray(self.offset)

    def from_full_image(self, points: np.ndarray) -> np.ndarray:
        """Full-image pixel coordinates (..., 2) -> crop pixel coordinates."""
        return (np.asarray(points, dtype=np.float64) - np.asarray(self.offset) + 0.5) * self.scale - 0.5


def crop_intrinsics(camera_k: np.ndarray, offset: tuple[float, float], scale: float) -> np.ndarray:
    """K of a crop whose top-left corner is `offset` (full pixels), resized by `scale`."""
    k = np.asarray(camera_k, dtype=np.float64)
    if k.shape != (3, 3):
        raise InvalidInputError(f"camera_k must be 3x3, got shape {k.shape}")
    to_crop = np.array(
        [[scale, 0.0, scale * (0.5 - offset[0]) - 0.5], [0.0, scale, scale * (0.5 - offset[1]) - 0.5], [0.0, 0.0, 1.0]]
    )
    return to_crop @ k


def person_crop(
    image_rgb: np.ndarray,
    box: PersonBox,
    camera_k: np.ndarray | None = None,
    margin: float = 0.15,
    square: bool = True,
    output_size: int | None = None,
) -> PersonCrop:
    """Crop around `box` grown by `margin` (fraction of its size per side); square crops keep the person centred.

    Pixels outside the image are black (the crop is not shifted to stay inside, so the person stays centred and
    the intrinsics stay a pure shift/scale). With `output_size` the (square) crop is resized to that side.
    """
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidInputError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    if margin < 0:
        raise InvalidInputError(f"crop margin must be >= 0, got {margin}")
    region = box.expanded(1.0 + 2.0 * margin)
    if square:
        side = max(region.width, region.height, 1.0)
        cx, cy = region.centre
        region = PersonBox(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    x0, y0 = int(np.floor(region.x0)), int(np.floor(region.y0))
    x1, y1 = max(int(np.ceil(region.x1)), x0 + 1), max(int(np.ceil(region.y1)), y0 + 1)
    height, width = image.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    scale = 1.0
    if output_size is not None:
        if output_size < 1:
            raise InvalidInputError(f"crop output_size must be >= 1, got {output_size}")
        from PIL import Image

        scale = output_size / out.shape[1]
        out_h = max(round(out.shape[0] * scale), 1)
        out = np.asarray(Image.fromarray(out).resize((output_size, out_h), Image.BILINEAR))
    offset = (float(x0), float(y0))
    k = crop_intrinsics(camera_k, offset, scale) if camera_k is not None else None
    return PersonCrop(out, k, offset, scale, PersonBox(float(x0), float(y0), float(x1), float(y1)))
