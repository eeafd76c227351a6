"""PersonBox geometry and the VLM person crop: its intrinsics must project 3D points where the crop shows them."""

from __future__ import annotations

import numpy as np
import pytest

from ivlm_core.errors import InvalidInputError
from ivlm_core.tracking import PersonBox, crop_intrinsics, person_crop

CAMERA_K = np.array([[600.0, 0.0, 330.0], [0.0, 610.0, 235.0], [0.0, 0.0, 1.0]])


def _project(k: np.ndarray, points: np.ndarray) -> np.ndarray:
    uvw = points @ k.T
    return uvw[:, :2] / uvw[:, 2:]


def test_person_box_geometry():
    box = PersonBox(10, 20, 30, 60)
    assert (box.width, box.height, box.area, box.centre) == (20, 40, 800, (20, 40))
    assert box.expanded(2.0).as_tuple() == (0, 0, 40, 80)
    assert PersonBox(-5, -5, 700, 20).clipped(640, 480).as_tuple() == (0, 0, 640, 20)
    assert box.iou(box) == 1.0 and box.iou(PersonBox(100, 100, 110, 110)) == 0.0
    assert box.iou(PersonBox(20, 20, 40, 60)) == pytest.approx(400 / 1200)
    assert PersonBox(12, 22, 14, 24).overlap_of_smaller(box) == 1.0
    points = np.array([[1, 2], [5, 9], [100, 100]], dtype=np.float32)
    assert PersonBox.from_points(points, np.array([1.0, 1.0, 0.0])).as_tuple() == (1, 2, 5, 9)
    with pytest.raises(InvalidInputError):
        PersonBox(5, 0, 1, 1)
    with pytest.raises(InvalidInputError):
        PersonBox(0, 0, float("nan"), 1)


@pytest.mark.parametrize("output_size", [None, 224])
def test_crop_intrinsics_project_points_onto_the_crop(output_size):
    rng = np.random.default_rng(0)
    points = rng.uniform([-0.5, -0.8, 2.5], [0.5, 0.8, 3.5], size=(20, 3))
    pixels = _project(CAMERA_K, points)
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    box = PersonBox.from_points(pixels)
    crop = person_crop(image, box, CAMERA_K, margin=0.1, square=True, output_size=output_size)
    assert crop.image.shape[0] == crop.image.shape[1]  # square
    if output_size:
        assert crop.image.shape[:2] == (output_size, output_size)
    in_crop = _project(crop.camera_k, points)
    np.testing.assert_allclose(in_crop, crop.from_full_image(pixels), atol=1e-6)
    np.testing.assert_allclose(crop.to_full_image(in_crop), pixels, atol=1e-6)
    assert np.all(in_crop >= 0) and np.all(in_crop < crop.image.shape[1])  # the person is inside the crop
    np.testing.assert_allclose(crop_intrinsics(CAMERA_K, (0.0, 0.0), 1.0), CAMERA_K)


def test_crop_pixels_sit_where_the_crop_intrinsics_say():
    """A bright dot at a projected 3D point appears in the (resized) crop at the crop-K projection."""
    point = np.array([[0.12, -0.05, 3.0]])
    u, v = _project(CAMERA_K, point)[0]
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    row, col = round(v), round(u)
    image[row - 3 : row + 4, col - 3 : col + 4] = 255
    box = PersonBox(u - 60, v - 90, u + 40, v + 50)
    for output_size in (None, 320):
        crop = person_crop(image, box, CAMERA_K, margin=0.2, output_size=output_size)
        cu, cv = _project(crop.camera_k, point)[0]
        ys, xs = np.nonzero(crop.image[..., 0] > 128)
        assert abs(xs.mean() - cu) < 1.0 and abs(ys.mean() - cv) < 1.0


def test_crop_past_the_border_is_padded_not_shifted():
    image = np.full((100, 100, 3), 7, dtype=np.uint8)
    crop = person_crop(image, PersonBox(-20, -20, 20, 20), CAMERA_K, margin=0.0)
    assert crop.offset == (-20.0, -20.0) and crop.image.shape == (40, 40, 3)
    assert crop.image[0, 0, 0] == 0 and crop.image[30, 30, 0] == 7
    assert crop.camera_k[0, 2] == pytest.approx(CAMERA_K[0, 2] + 20)
    with pytest.raises(InvalidInputError):
        person_crop(image.astype(np.float32), PersonBox(0, 0, 10, 10))
