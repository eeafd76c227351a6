"""Inputs checked before they cost memory or fail late (issue 10, items 2, 7, 10), without a ROS graph.

- image size from the message fields / PNG or JPEG header, before decoding (max_image_pixels);
- camera intrinsics: a bad K means contacts without placement, with the reason;
- SMPL-X betas/expression of the wrong length are refused (never cut or padded);
- every object-library mesh is loaded and checked when the pipeline loads (configure), naming a bad file.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageFile

from ivlm_core.errors import InvalidInputError, IvlmError
from ivlm_core.fitting.external_body import parse_smplx_params
from ivlm_core.geometry.intrinsics import camera_k_problem, usable_camera_k
from ivlm_core.pipeline import InteractionPipeline, PipelineConfig
from ivlm_ros.image_conversion import (
    DEFAULT_MAX_PIXELS,
    ImageTooLargeError,
    compressed_to_rgb,
    raw_image_to_rgb,
)
from ivlm_ros.node import camera_matrix


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height (8-bit grey) in its IHDR; its pixel data is a tiny zlib stream."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose SOF0 marker is patched to declare width x height."""
    buffer = io.BytesIO()
    PILImage.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self):
        raise AssertionError("pixels were decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.parametrize(("fmt", "payload"), [("png", _png_header_only(13000, 13000)),
                                               ("jpeg", _jpeg_claiming(13000, 13000))], ids=["png", "jpeg"])
def test_compressed_images_above_the_limit_are_refused_from_the_header(no_decoding, fmt: str, payload: bytes) -> None:
    assert len(payload) < 2000  # a few bytes can declare 169 MP (0.5 GB of RGB)
    with pytest.raises(ImageTooLargeError, match="13000x13000") as info:
        compressed_to_rgb(fmt, payload, DEFAULT_MAX_PIXELS)
    assert "max_image_pixels" in str(info.value) and "without decoding" in str(info.value)


def test_compressed_images_within_the_limit_still_decode() -> None:
    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 30), (10, 20, 30)).save(buffer, "PNG")
    rgb = compressed_to_rgb("png", buffer.getvalue(), 40 * 30)
    assert rgb.shape == (30, 40, 3)
    with pytest.raises(ImageTooLargeError, match="40x30"):
        compressed_to_rgb("png", buffer.getvalue(), 40 * 30 - 1)


def test_raw_images_above_the_limit_are_refused_before_touching_the_data() -> None:
    with pytest.raises(ImageTooLargeError, match="20000x10000"):
        raw_image_to_rgb("rgb8", 10000, 20000, 60000, 0, b"", max_pixels=DEFAULT_MAX_PIXELS)
    rgb = raw_image_to_rgb("rgb8", 2, 3, 9, 0, bytes(18), max_pixels=6)
    assert rgb.shape == (2, 3, 3)


def _k(**changes: float) -> np.ndarray:
    k = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
    names = {"fx": (0, 0), "fy": (1, 1), "cx": (0, 2), "k22": (2, 2), "k20": (2, 0)}
    for name, value in changes.items():
        k[names[name]] = value
    return k


@pytest.mark.parametrize(
    ("k", "fragment"),
    [
        (_k(fx=np.nan), "NaN or infinite"),
        (_k(cx=np.inf), "NaN or infinite"),
        (_k(k22=0.0), "last row"),
        (_k(k20=1.0), "last row"),
        (_k(fx=1e300), "focal lengths"),
        (_k(fy=-500.0), "focal lengths"),
        (np.eye(2), "3x3"),
    ],
)
def test_unusable_intrinsics_are_named(k: np.ndarray, fragment: str) -> None:
    problem = camera_k_problem(k)
    assert problem is not None and fragment in problem
    usable, reason = usable_camera_k(k)
    assert usable is None and reason.startswith("invalid camera_info:")


def test_good_and_absent_intrinsics() -> None:
    assert camera_k_problem(_k()) is None
    k, reason = usable_camera_k(_k())
    assert reason == "" and k.dtype == np.float64
    assert usable_camera_k(None) == (None, "")


def test_camera_info_k_is_classified() -> None:
    from sensor_msgs.msg import CameraInfo

    assert camera_matrix(None) == (None, "")
    assert camera_matrix(CameraInfo()) == (None, "")  # all-zero K: uncalibrated, not invalid
    info = CameraInfo(k=_k(k22=0.0).reshape(-1).tolist())
    k, reason = camera_matrix(info)
    assert k is None and "invalid camera_info" in reason and "last row" in reason


def test_wrong_betas_or_expression_lengths_are_refused_with_the_expected_size() -> None:
    base = {"global_orient": np.zeros(3), "body_pose": np.zeros(63), "transl": np.zeros(3)}
    for name, size in (("betas", 16), ("betas", 5), ("expression", 50), ("expression", 3)):
        with pytest.raises(InvalidInputError, match=f"{name} must have 10 values .* got {size}"):
            parse_smplx_params({**base, name: np.zeros(size)})
    ok = parse_smplx_params({**base, "betas": np.ones(10), "expression": np.zeros(0)})
    assert ok["betas"].tolist() == [1.0] * 10 and ok["expression"].shape == (10,)
    with pytest.raises(InvalidInputError, match="betas must have 16 values"):
        parse_smplx_params({**base, "betas": np.zeros(10)}, num_betas=16)


def test_a_bad_library_mesh_fails_the_load_naming_the_file(tmp_path: Path, tiny_checkpoints, tiny_body_assets) -> None:
    import trimesh

    trimesh.creation.box().export(tmp_path / "box.obj")
    (tmp_path / "empty.obj").write_text("# no vertices\n")
    (tmp_path / "objects.yaml").write_text(
        "objects:\n  box: {mesh: box.obj}\n  cup: {mesh: empty.obj, scale: 0.001}\n"
    )
    cfg = PipelineConfig(checkpoint_dir=str(tiny_checkpoints["Gen"]), body_model_dir=str(tiny_body_assets[2]),
                         object_library=str(tmp_path / "objects.yaml"), task="object_contact")
    with pytest.raises(InvalidInputError, match=r"empty\.obj"):
        InteractionPipeline.load(cfg)  # at load (configure), not on the first query for 'cup'
    (tmp_path / "objects.yaml").write_text("objects:\n  box: {mesh: box.obj}\n  cup: {mesh: missing.obj}\n")
    with pytest.raises(IvlmError, match=r"missing\.obj"):
        InteractionPipeline.load(cfg)
