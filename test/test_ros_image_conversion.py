"""sensor_msgs/Image and CompressedImage decoding: every encoding, padded strides, byte order, compression."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from ivlm_core.errors import InvalidInputError
from ivlm_ros.image_conversion import (
    SUPPORTED_ENCODINGS,
    compressed_to_rgb,
    raw_image_to_rgb,
    rgb_to_image_fields,
)

pytestmark = pytest.mark.ros

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def _pack(pixels: np.ndarray, pad: int) -> tuple[bytes, int]:
    """Row-major bytes with ``pad`` garbage bytes after each row, and the resulting step."""
    rows = pixels.reshape(pixels.shape[0], -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1)
    return padded.tobytes(), padded.shape[1]


def _encode(encoding: str, rgb: np.ndarray, big_endian: bool = False) -> np.ndarray:
    """Pixels (H, W, C) laid out as ``encoding`` (16-bit: the 8-bit value in the high byte, low byte 0x11)."""
    bgr = rgb[:, :, ::-1]
    alpha = np.full((*rgb.shape[:2], 1), 200, np.uint8)
    grey = rgb[:, :, :1]
    base = {
        "rgb8": rgb,
        "bgr8": bgr,
        "8UC3": bgr,
        "rgba8": np.concatenate([rgb, alpha], 2),
        "bgra8": np.concatenate([bgr, alpha], 2),
        "mono8": grey,
    }
    if encoding in base:
        return np.ascontiguousarray(base[encoding])
    eight = base[encoding.replace("16", "8")]
    wide = eight.astype(np.uint16) * 256 + 0x11
    return np.ascontiguousarray(wide.astype(">u2" if big_endian else "<u2"))


def _expected(encoding: str) -> np.ndarray:
    if encoding.startswith("mono"):
        return np.repeat(RGB[:, :, :1], 3, axis=2)
    return RGB


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
@pytest.mark.parametrize("pad", [0, 3])
def test_every_encoding_with_and_without_row_padding(encoding: str, pad: int) -> None:
    data, step = _pack(_encode(encoding, RGB), pad)
    out = raw_image_to_rgb(encoding, 5, 7, step, 0, data)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, _expected(encoding))


@pytest.mark.parametrize("encoding", ["rgb16", "bgr16", "mono16", "rgba16"])
def test_16_bit_byte_order_follows_is_bigendian(encoding: str) -> None:
    for big in (False, True):
        data, step = _pack(_encode(encoding, RGB, big_endian=big), 1)
        np.testing.assert_array_equal(
            raw_image_to_rgb(encoding, 5, 7, step, int(big), data), _expected(encoding)
        )
    # Reading big-endian bytes as little-endian gives different (wrong) values: the flag matters.
    data, step = _pack(_encode(encoding, RGB, big_endian=True), 0)
    assert not np.array_equal(raw_image_to_rgb(encoding, 5, 7, step, 0, data), _expected(encoding))


def test_8_bit_data_ignores_is_bigendian() -> None:
    data, step = _pack(RGB, 0)
    np.testing.assert_array_equal(raw_image_to_rgb("rgb8", 5, 7, step, 1, data), RGB)


def test_accepts_array_and_memoryview_buffers() -> None:
    import array

    data, step = _pack(RGB, 2)
    np.testing.assert_array_equal(raw_image_to_rgb("rgb8", 5, 7, step, 0, array.array("B", data)), RGB)
    np.testing.assert_array_equal(raw_image_to_rgb("rgb8", 5, 7, step, 0, memoryview(data)), RGB)


@pytest.mark.parametrize(
    ("encoding", "fragment"),
    [
        ("16UC1", "depth"),
        ("32FC1", "depth"),
        ("8UC1", "mono8"),
        ("yuv422", "supported:"),
        ("bayer_rggb8", "supported"),
    ],
)
def test_rejected_encodings_say_why(encoding: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        raw_image_to_rgb(encoding, 2, 2, 8, 0, bytes(32))


def test_malformed_sizes_are_rejected() -> None:
    with pytest.raises(InvalidInputError, match="step"):
        raw_image_to_rgb("rgb8", 2, 4, 10, 0, bytes(40))
    with pytest.raises(InvalidInputError, match="needs"):
        raw_image_to_rgb("rgb8", 4, 4, 12, 0, bytes(40))
    with pytest.raises(InvalidInputError, match="no pixels"):
        raw_image_to_rgb("rgb8", 0, 4, 12, 0, b"")


def _compress(rgb: np.ndarray, fmt: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def test_png_is_lossless_and_grey_png_becomes_rgb() -> None:
    np.testing.assert_array_equal(compressed_to_rgb("png", _compress(RGB, "PNG")), RGB)
    grey = compressed_to_rgb("rgb8; png compressed ", _compress(RGB, "PNG", mode="L"))
    assert grey.shape == (5, 7, 3) and np.array_equal(grey[..., 0], grey[..., 2])


def test_jpeg_decodes_close_to_the_source() -> None:
    smooth = np.clip(np.add.outer(np.arange(32) * 6, np.arange(40) * 4)[..., None] + [0, 20, 40], 0, 255)
    smooth = smooth.astype(np.uint8)
    out = compressed_to_rgb("bgr8; jpeg compressed bgr8", _compress(smooth, "JPEG"))
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth).mean() < 6


def test_bad_compressed_input_is_rejected_with_a_reason() -> None:
    with pytest.raises(InvalidInputError, match="compressedDepth"):
        compressed_to_rgb("16UC1; compressedDepth png", _compress(RGB, "PNG"))
    with pytest.raises(InvalidInputError, match="unsupported CompressedImage format"):
        compressed_to_rgb("theora", b"123")
    with pytest.raises(InvalidInputError, match="cannot decode"):
        compressed_to_rgb("jpeg", b"not a jpeg at all")
    with pytest.raises(InvalidInputError, match="no data"):
        compressed_to_rgb("png", b"")


def test_rgb_to_image_fields_round_trips() -> None:
    fields = rgb_to_image_fields(RGB)
    assert fields["encoding"] == "rgb8" and fields["step"] == 21
    np.testing.assert_array_equal(
        raw_image_to_rgb(
            fields["encoding"], fields["height"], fields["width"], fields["step"], 0, fields["data"]
        ),
        RGB,
    )


def test_ros_message_helpers_decode_real_messages() -> None:
    from sensor_msgs.msg import CompressedImage, Image

    from ivlm_ros.image_conversion import compressed_msg_to_rgb, image_msg_to_rgb

    data, step = _pack(_encode("bgr8", RGB), 5)
    msg = Image(height=5, width=7, encoding="bgr8", step=step, data=data)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), RGB)
    cmsg = CompressedImage(format="png", data=_compress(RGB, "PNG"))
    np.testing.assert_array_equal(compressed_msg_to_rgb(cmsg), RGB)


def test_object_masks_become_boolean_and_other_encodings_are_refused() -> None:
    from sensor_msgs.msg import Image

    from ivlm_ros.image_conversion import mask_msg_to_bool

    mask = np.zeros((4, 6), np.uint8)
    mask[1:3, 2:5] = 255
    data, step = _pack(mask[:, :, None], 2)
    for encoding in ("mono8", "8UC1"):
        out = mask_msg_to_bool(Image(height=4, width=6, encoding=encoding, step=step, data=data))
        np.testing.assert_array_equal(out, mask > 0)
    with pytest.raises(InvalidInputError, match="mono8 or 8UC1"):
        mask_msg_to_bool(Image(height=4, width=6, encoding="rgb8", step=18, data=bytes(72)))
