"""Keypoint fit on the real sample photos (mediapipe keypoints, synthetic humanoid SMPL-X body)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="keypoint detection is the optional mediapipe capability")

from ivlm_core.fitting.body_fit import BodyFitConfig, CameraBodyPlacer, load_body_layer
from ivlm_core.fitting.keypoints import MediaPipeKeypointDetector

SAMPLES = Path(__file__).parent / "data" / "samples"
PHOTOS = ("bench__standing", "surfboard__carrying", "tennis_racket__serve")


def nominal_camera(height: int, width: int, fov_deg: float = 55.0) -> np.ndarray:
    focal = width / 2 / np.tan(np.radians(fov_deg) / 2)
    return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def detections():
    from PIL import Image

    out = {}
    with MediaPipeKeypointDetector() as detector:
        for name in PHOTOS:
            image = np.asarray(Image.open(SAMPLES / f"{name}.png").convert("RGB"))
            out[name] = (image, detector(image))
    return out


@pytest.fixture(scope="module")
def placer(tmp_path_factory: pytest.TempPathFactory):
    from ivlm_core.testing.synthetic_body import write_synthetic_smplx

    root = tmp_path_factory.mktemp("sample_fit_models")
    write_synthetic_smplx(root)
    return CameraBodyPlacer(load_body_layer(root), BodyFitConfig.fast(), stream=False)


@pytest.mark.parametrize("name", PHOTOS)
def test_reprojected_keypoints_land_on_the_detected_ones(name, detections, placer):
    image, keypoints = detections[name]
    assert keypoints is not None, f"mediapipe found nobody in {name}"
    assert keypoints.pose_2d.shape == (33, 2) and keypoints.pose_world.shape == (33, 3)
    assert keypoints.person_mask is not None and keypoints.person_mask.shape == image.shape[:2]
    camera_k = nominal_camera(*image.shape[:2])
    result = placer.place(image, camera_k, keypoints=keypoints)
    assert result.placed, result.status
    targets = result.targets
    used = targets.weights > 0
    assert used.sum() >= 10
    error = np.linalg.norm(result.fitted_2d - targets.points_2d, axis=1) / targets.diagonal
    worst = targets.names[int(np.argmax(np.where(used, error, 0)))]
    assert error[used].max() < 0.05, f"{worst} is {error[used].max():.3f} of the diagonal away"
    assert result.reprojection_error_rel < 0.02
    # In front of the camera at a plausible distance for a person filling part of a 55 deg view.
    assert 0.5 < float(np.median(result.vertices[:, 2])) < 20.0


def test_hands_are_found_on_wrist_crops(detections):
    """Both hands of the photographer on the bench are visible; mediapipe misses them on the full frame."""
    _, keypoints = detections["bench__standing"]
    assert set(keypoints.hands) == {"left", "right"}
    for side, hand in keypoints.hands.items():
        wrist = keypoints.pose_2d[15 if side == "left" else 16]
        assert np.linalg.norm(hand.points_2d[0] - wrist) < 0.05 * keypoints.image_diagonal


def test_tracking_detector_survives_a_change_of_frame_size() -> None:
    """A stream detector fed a frame of another size (e.g. a one-shot request) keeps working."""
    from PIL import Image

    photo = np.asarray(Image.open(SAMPLES / "bench__standing.png").convert("RGB"))
    smaller = np.ascontiguousarray(photo[::2, ::2])
    with MediaPipeKeypointDetector(static_image_mode=False, detect_hands=False) as detector:
        for frame in (photo, smaller, photo):
            found = detector(frame)
            assert found is not None and found.image_size == frame.shape[:2]
