"""sensor_msgs/Image and CompressedImage -> RGB uint8 numpy, and CameraInfo -> K, without cv_bridge.

cv_bridge is not on PyPI and drags OpenCV in; the few encodings a colour camera publishes are simple enough to
decode with numpy (raw) and PIL (compressed). Every rejection says which encoding/size was wrong and why.

Size is checked before any decoding: a 164 kB PNG can declare 13000x13000 pixels (0.5 GB of RGB), so the
width x height in the message fields (raw) or in the PNG/JPEG header (compressed; PIL's ``open`` reads only
the header) is compared with ``max_pixels`` first and the frame is refused with :class:`ImageTooLargeError`.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image as PILImage

from ivlm_core.errors import InvalidInputError
from ivlm_core.geometry.intrinsics import usable_camera_k

if TYPE_CHECKING:
    from sensor_msgs.msg import CameraInfo

# encoding -> (channels, bytes per channel, channel order as RGB indices or None for grey)
_RAW_ENCODINGS: dict[str, tuple[int, int, tuple[int, ...] | None]] = {
    "rgb8": (3, 1, (0, 1, 2)),
    "bgr8": (3, 1, (2, 1, 0)),
    "rgba8": (4, 1, (0, 1, 2)),
    "bgra8": (4, 1, (2, 1, 0)),
    "mono8": (1, 1, None),
    "8UC3": (3, 1, (2, 1, 0)),  # OpenCV convention: 8UC3 without a colour name is BGR
    # 16-bit colour/grey (some industrial cameras): byte order from is_bigendian, scaled to 8 bit.
    "rgb16": (3, 2, (0, 1, 2)),
    "bgr16": (3, 2, (2, 1, 0)),
    "rgba16": (4, 2, (0, 1, 2)),
    "bgra16": (4, 2, (2, 1, 0)),
    "mono16": (1, 2, None),
}
_REJECTED_REASONS: dict[str, str] = {
    "16UC1": "16UC1 is a depth/IR format (millimetres), not a colour photo; subscribe to the colour stream",
    "32FC1": "32FC1 is a depth format (metres), not a colour photo; subscribe to the colour stream",
    "8UC1": "8UC1 has no colour meaning (often a mask or label image); publish mono8 if it really is grey",
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_RAW_ENCODINGS)
DEFAULT_MAX_PIXELS = 16_000_000


class ImageTooLargeError(InvalidInputError):
    """The image declares more pixels than allowed; nothing was decoded."""


def check_pixel_count(width: int, height: int, max_pixels: int | None, what: str = "image") -> None:
    """Refuse ``width x height`` above ``max_pixels`` (None = no limit) before anything is decoded."""
    if max_pixels is not None and int(width) * int(height) > max_pixels:
        raise ImageTooLargeError(
            f"{what} is {width}x{height} = {int(width) * int(height) / 1e6:.1f} MP, above max_image_pixels "
            f"({max_pixels / 1e6:.1f} MP); dropped without decoding (raise max_image_pixels if this is intended)"
        )
SUPPORTED_COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "jpg", "png")


def raw_image_to_rgb(
    encoding: str,
    height: int,
    width: int,
    step: int,
    is_bigendian: int | bool,
    data: bytes | Any,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode the fields of a sensor_msgs/Image into a C-contiguous (H, W, 3) uint8 RGB array (a copy).

    ``step`` may be larger than ``width * pixel_size`` (row padding); the padding is skipped. ``is_bigendian``
    sets the byte order of 16-bit channels (kept to their high 8 bits); 8-bit data ignores it. Images above
    ``max_pixels`` are refused (ImageTooLargeError) before any conversion.
    """
    check_pixel_count(width, height, max_pixels)
    if encoding in _REJECTED_REASONS:
        raise InvalidInputError(f"unsupported image encoding '{encoding}': {_REJECTED_REASONS[encoding]}")
    if encoding not in _RAW_ENCODINGS:
        raise InvalidInputError(
            f"unsupported image encoding '{encoding}'; supported: {', '.join(SUPPORTED_ENCODINGS)} "
            "(or CompressedImage jpeg/png)"
        )
    channels, channel_bytes, order = _RAW_ENCODINGS[encoding]
    if height <= 0 or width <= 0:
        raise InvalidInputError(f"image has no pixels: {width}x{height}")
    row_bytes = width * channels * channel_bytes
    if step < row_bytes:
        raise InvalidInputError(
            f"image step {step} is smaller than width*pixel size = "
            f"{width}*{channels * channel_bytes} = {row_bytes}"
        )
    try:
        buffer = np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # a plain list of ints
        buffer = np.asarray(data, dtype=np.uint8)
    needed = step * (height - 1) + row_bytes
    if buffer.size < needed:
        raise InvalidInputError(
            f"image data has {buffer.size} bytes but {width}x{height} {encoding} "
            f"with step {step} needs {needed}"
        )
    # Strided view over the rows (skips row padding without a copy), then one copy at the end.
    rows = np.lib.stride_tricks.as_strided(
        buffer, shape=(height, row_bytes), strides=(step, 1), writeable=False
    )
    if channel_bytes == 2:
        samples = rows.view(">u2" if is_bigendian else "<u2")
        pixels = (samples >> 8).astype(np.uint8).reshape(height, width, channels)
    else:
        pixels = rows.reshape(height, width, channels)
    if order is None:
        rgb = np.repeat(pixels, 3, axis=2)
    else:
        rgb = pixels[:, :, list(order)]
    return np.ascontiguousarray(rgb)


def image_msg_to_rgb(msg: Any, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB."""
    return raw_image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data, max_pixels)


def compressed_to_rgb(format_field: str, data: bytes | Any, max_pixels: int | None = None) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage payload (jpeg/png, as image_transport writes it) to RGB.

    The size in the PNG/JPEG header is checked against ``max_pixels`` before the pixels are decoded.
    """
    fmt = format_field.lower()
    # image_transport writes e.g. "rgb8; jpeg compressed bgr8" or just "jpeg": the codec name matters.
    if not any(name in fmt for name in SUPPORTED_COMPRESSED_FORMATS):
        raise InvalidInputError(
            f"unsupported CompressedImage format '{format_field}'; supported: jpeg, png "
            "(compressedDepth is a depth stream, not a colour photo)"
        )
    if "compresseddepth" in fmt.replace(" ", ""):
        raise InvalidInputError(
            "compressedDepth images hold depth, not colour; subscribe to the colour stream"
        )
    payload = bytes(data)
    if not payload:
        raise InvalidInputError("CompressedImage has no data")
    try:
        with PILImage.open(io.BytesIO(payload)) as img:  # reads the header only
            check_pixel_count(img.width, img.height, max_pixels, f"compressed {img.format} image")
            img.load()
            if img.mode in ("I;16", "I;16B", "I", "F"):
                raise InvalidInputError(
                    f"compressed image holds {img.mode} (16/32-bit) data, not 8-bit colour"
                )
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except InvalidInputError:
        raise
    except PILImage.DecompressionBombError as exc:  # PIL's own header check (> 179 MP) came first
        raise ImageTooLargeError(f"compressed image refused without decoding: {exc}") from exc
    except Exception as exc:  # PIL raises several types for corrupt data
        raise InvalidInputError(f"cannot decode CompressedImage ({format_field}): {exc}") from exc


def compressed_msg_to_rgb(msg: Any, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage -> (H, W, 3) uint8 RGB."""
    return compressed_to_rgb(msg.format, msg.data, max_pixels)


def mask_msg_to_bool(msg: Any) -> np.ndarray:
    """An object mask (sensor_msgs/Image mono8 or 8UC1, non-zero = object) -> (H, W) bool."""
    if msg.encoding not in ("mono8", "8UC1"):
        raise InvalidInputError(
            f"object mask must be mono8 or 8UC1 (non-zero = object), got '{msg.encoding}'"
        )
    grey = raw_image_to_rgb("mono8", msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)
    return grey[:, :, 0] > 0


def rgb_to_image_fields(rgb: np.ndarray) -> dict[str, Any]:
    """Fields of an rgb8 sensor_msgs/Image for an (H, W, 3) uint8 array (for the debug image)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidInputError(f"expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    return {
        "encoding": "rgb8",
        "height": height,
        "width": width,
        "step": width * 3,
        "is_bigendian": 0,
        "data": np.ascontiguousarray(rgb).tobytes(),
    }


def raw_camera_k(info: CameraInfo | None) -> np.ndarray | None:
    """K (3, 3) as sent, or None when absent or uncalibrated (all-zero K, the ROS convention)."""
    if info is None:
        return None
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    return k if np.any(k) else None


def camera_matrix(info: CameraInfo | None) -> tuple[np.ndarray | None, str]:
    """(K, '') when usable; (None, '') when absent/uncalibrated; (None, 'invalid camera_info: <why>') when K is
    present but unusable (NaN/inf, fx <= 0, K[2][2] != 1, ...): contacts are then published unplaced."""
    return usable_camera_k(raw_camera_k(info))
