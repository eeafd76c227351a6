"""Keypoints a perfect detector would report for a posed body: the tracker's tests and benchmarks feed them.

Why: tracking accuracy (does a warm track follow a moving person, re-initialise after a jump) can only be
measured against a known truth; projecting a posed (synthetic) SMPL-X body through K gives 2D landmarks and
mediapipe-style metric world landmarks whose ground truth is the pose itself.
"""

from __future__ import annotations

import numpy as np
import torch

from ivlm_core.fitting.body_fit import MODEL_POINT_NAMES, POSE_TO_SMPLX, KeypointBodyFitter, camera_ray_rotation
from ivlm_core.fitting.keypoints import POSE_INDEX, POSE_LANDMARK_NAMES, HumanKeypoints


def model_points(fitter: KeypointBodyFitter, params: dict[str, np.ndarray]) -> np.ndarray:
    """(76, 3) SMPL-X joints + keypoint vertices of the posed body, camera frame."""
    with torch.no_grad():
        tensors = {k: torch.from_numpy(np.asarray(v, dtype=np.float32))[None] for k, v in params.items()}
        return fitter.model_points(fitter._complete(tensors))[0].numpy()


def project_keypoints(
    fitter: KeypointBodyFitter, params: dict[str, np.ndarray], camera_k: np.ndarray, image_size: tuple[int, int]
) -> HumanKeypoints:
    """Projected 2D pose landmarks (confidence 1 where SMPL-X has the point, else 0) and ray-aligned 3D ones."""
    points = model_points(fitter, params)
    k = np.asarray(camera_k, dtype=np.float64)
    index = {name: i for i, name in enumerate(MODEL_POINT_NAMES)}
    pose_3d = np.tile([0.0, 0.0, 1.0], (len(POSE_LANDMARK_NAMES), 1))  # unmapped landmarks: confidence 0
    confidence = np.zeros(len(POSE_LANDMARK_NAMES), dtype=np.float32)
    for mp_name, point, _ in POSE_TO_SMPLX:
        pose_3d[POSE_INDEX[mp_name]] = points[index[point]]
        confidence[POSE_INDEX[mp_name]] = 1.0
    pixels = pose_3d[:, :2] / pose_3d[:, 2:3] * np.diag(k)[:2] + k[:2, 2]
    hips = [POSE_INDEX["left_hip"], POSE_INDEX["right_hip"]]
    world = (pose_3d - pose_3d[hips].mean(axis=0)) @ camera_ray_rotation(pixels[hips].mean(axis=0), k)
    return HumanKeypoints(image_size, pixels.astype(np.float32), confidence, world.astype(np.float32))


class ScriptedKeypointDetector:
    """A detector that reports whatever keypoints the test set for the next frame (None = nobody).

    Only full frames (the size of the keypoints' image) see the person; crops of a fallback search see nobody.
    """

    def __init__(self) -> None:
        self.keypoints: HumanKeypoints | None = None
        self.calls = 0

    def __call__(self, image_rgb: np.ndarray) -> HumanKeypoints | None:
        self.calls += 1
        if self.keypoints is None or tuple(image_rgb.shape[:2]) != tuple(self.keypoints.image_size):
            return None
        return self.keypoints


def coordinate_image(height: int, width: int) -> np.ndarray:
    """An RGB image whose pixels encode their own position, so a detector can tell where a crop came from.

    R = x mod 256, G = y mod 256, B = (x // 256) + 16 (y // 256) (images up to 4096 pixels a side).
    """
    y, x = np.mgrid[:height, :width]
    return np.stack([x % 256, y % 256, x // 256 + 16 * (y // 256)], axis=-1).astype(np.uint8)


class ScriptedPeopleDetector:
    """Several scripted people on a `coordinate_image`; like mediapipe it reports one person per call.

    A call on the full image or on a crop of it returns the first person whose box centre lies in that crop, in
    the crop's pixels: a stand-in for a one-person detector run per crop, with a known truth.
    """

    def __init__(self, people: list[HumanKeypoints] | None = None) -> None:
        self.people = list(people or [])
        self.calls = 0

    def __call__(self, image_rgb: np.ndarray) -> HumanKeypoints | None:
        from dataclasses import replace

        self.calls += 1
        corner = image_rgb[0, 0].astype(np.int64)
        x0, y0 = corner[0] + 256 * (corner[2] % 16), corner[1] + 256 * (corner[2] // 16)
        height, width = image_rgb.shape[:2]
        for person in self.people:
            seen = person.pose_confidence > 0
            centre = (person.pose_2d[seen].min(axis=0) + person.pose_2d[seen].max(axis=0)) / 2
            if x0 <= centre[0] < x0 + width and y0 <= centre[1] < y0 + height:
                shifted = (person.pose_2d - np.array([x0, y0], dtype=np.float32)).astype(np.float32)
                return replace(person, image_size=(height, width), pose_2d=shifted)
        return None
