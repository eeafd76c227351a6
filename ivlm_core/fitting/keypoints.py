"""2D/3D human keypoints from a photo (mediapipe BlazePose + hands), the observations the body fit uses.

mediapipe is an optional capability: its legacy ``mediapipe.solutions`` models ship inside the pinned wheel,
so nothing is downloaded at run time. Without it, :func:`require_mediapipe` says how to install it.
"""

from __future__ import annotations

import importlib
import time
import warnings
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from ivlm_core.errors import InvalidInputError, MissingAssetError

POSE_LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle", "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)  # fmt: skip
HAND_LANDMARK_NAMES: tuple[str, ...] = (
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip", "index_mcp", "index_pip", "index_dip",
    "index_tip", "middle_mcp", "middle_pip", "middle_dip", "middle_tip", "ring_mcp", "ring_pip", "ring_dip",
    "ring_tip", "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)  # fmt: skip
POSE_INDEX = {name: i for i, name in enumerate(POSE_LANDMARK_NAMES)}

MEDIAPIPE_INSTALL_HINT = (
    "Human keypoint detection needs mediapipe 0.10.14 (its pose/hand models ship in the wheel): run "
    "`bash scripts/setup_venv.sh` (installs requirements-nodeps.txt), or "
    "`pip install --no-deps mediapipe==0.10.14` plus the pins listed in requirements.txt "
    "(protobuf, absl-py, attrs, flatbuffers, opencv-contrib-python-headless, matplotlib)."
)


def require_mediapipe() -> ModuleType:
    """Import mediapipe lazily, so that the rest of ivlm works without the optional keypoint capability."""
    try:
        return importlib.import_module("mediapipe")
    except ImportError as exc:
        raise MissingAssetError("Python package 'mediapipe'", "mediapipe", f"{MEDIAPIPE_INSTALL_HINT} ({exc})") from exc


def mediapipe_available() -> bool:
    try:
        require_mediapipe()
    except MissingAssetError:
        return False
    return True


@dataclass
class HandKeypoints:
    """21 mediapipe hand landmarks of one hand, in full-image pixels (x = column, y = row)."""

    side: str  # "left" | "right": the person's own side, from the pose wrist it was attached to
    points_2d: np.ndarray  # (21, 2) float32
    confidence: np.ndarray  # (21,) float32 (the hand detection score for every landmark)


@dataclass
class HumanKeypoints:
    """What the keypoint detector saw of one person; pixel coordinates are in the input image."""

    image_size: tuple[int, int]  # (H, W)
    pose_2d: np.ndarray  # (33, 2) float32 pixels, x = column, y = row
    pose_confidence: np.ndarray  # (33,) float32 in [0, 1] (visibility x presence)
    pose_world: np.ndarray  # (33, 3) float32 metres, hip-centred, x right, y down, z away from the camera
    hands: dict[str, HandKeypoints] = field(default_factory=dict)
    person_mask: np.ndarray | None = None  # (H, W) float32 in [0, 1]
    detect_time_s: float = 0.0

    @property
    def image_diagonal(self) -> float:
        return float(np.hypot(*self.image_size))


class MediaPipeKeypointDetector:
    """BlazePose (33 landmarks, world landmarks, person mask) plus hands on crops around the pose wrists.

    Hands are detected on upsampled wrist crops because the palm detector misses small hands in full frames.
    """

    HAND_CROP_SIZE = 256
    HAND_CROP_SCALES = (1.6, 2.4)  # crop side = scale x 4 x wrist-to-knuckle distance, tried in order

    def __init__(
        self,
        model_complexity: int = 1,
        detect_hands: bool = True,
        segmentation: bool = True,
        static_image_mode: bool = True,
        min_detection_confidence: float = 0.5,
    ) -> None:
        mp = require_mediapipe()
        self._mp = mp
        self._pose_options = dict(
            static_image_mode=static_image_mode,
            model_complexity=model_complexity,
            enable_segmentation=segmentation,
            min_detection_confidence=min_detection_confidence,
        )
        self._pose = mp.solutions.pose.Pose(**self._pose_options)
        self._frame_size: tuple[int, int] | None = None
        self._hands = (
            mp.solutions.hands.Hands(
                static_image_mode=True, max_num_hands=2, model_complexity=1, min_detection_confidence=0.3
            )
            if detect_hands
            else None
        )

    def close(self) -> None:
        self._pose.close()
        if self._hands is not None:
            self._hands.close()

    def __enter__(self) -> MediaPipeKeypointDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, image_rgb: np.ndarray) -> HumanKeypoints | None:
        """Detect the most prominent person; None when nobody is found."""
        image = _check_image(image_rgb)
        height, width = image.shape[:2]
        start = time.perf_counter()
        if self._frame_size not in (None, (height, width)) and not self._pose_options["static_image_mode"]:
            # Tracking mode keeps per-frame state (landmark/segmentation smoothing) sized to the previous
            # frame; a frame of another size would make every later call fail, so start tracking afresh.
            self._pose.close()
            self._pose = self._mp.solutions.pose.Pose(**self._pose_options)
        self._frame_size = (height, width)
        with warnings.catch_warnings():  # mediapipe 0.10.14 calls a protobuf API deprecated in protobuf 4.25
            warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
            result = self._pose.process(image)
        if result.pose_landmarks is None:
            return None
        landmarks = result.pose_landmarks.landmark
        pose_2d = np.array([[lm.x * width, lm.y * height] for lm in landmarks], dtype=np.float32)
        confidence = np.array(
            [np.clip(lm.visibility, 0, 1) * (np.clip(lm.presence, 0, 1) if lm.presence else 1.0) for lm in landmarks],
            dtype=np.float32,
        )
        world = np.array([[lm.x, lm.y, lm.z] for lm in result.pose_world_landmarks.landmark], dtype=np.float32)
        mask = None
        if getattr(result, "segmentation_mask", None) is not None:
            mask = np.asarray(result.segmentation_mask, dtype=np.float32)
        hands = self._detect_hands(image, pose_2d) if self._hands is not None else {}
        return HumanKeypoints(
            image_size=(height, width),
            pose_2d=pose_2d,
            pose_confidence=confidence,
            pose_world=world,
            hands=hands,
            person_mask=mask,
            detect_time_s=time.perf_counter() - start,
        )

    def _detect_hands(self, image: np.ndarray, pose_2d: np.ndarray) -> dict[str, HandKeypoints]:
        found: dict[str, HandKeypoints] = {}
        wrists = {"left": pose_2d[POSE_INDEX["left_wrist"]], "right": pose_2d[POSE_INDEX["right_wrist"]]}
        for side in ("left", "right"):
            knuckles = (pose_2d[POSE_INDEX[f"{side}_pinky"]] + pose_2d[POSE_INDEX[f"{side}_index"]]) / 2
            palm = float(np.linalg.norm(knuckles - wrists[side]))
            centre = (wrists[side] + knuckles) / 2
            for scale in self.HAND_CROP_SCALES:
                side_px = max(scale * 4.0 * palm, 48.0)
                crop, origin = _square_crop(image, centre, side_px, self.HAND_CROP_SIZE)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
                    result = self._hands.process(crop)
                other = wrists["right" if side == "left" else "left"]
                best = None
                for hand_lms, handedness in zip(result.multi_hand_landmarks or [], result.multi_handedness or []):
                    # normalised crop coordinates -> image pixels
                    pts = np.array([[lm.x, lm.y] for lm in hand_lms.landmark], dtype=np.float32) * side_px + origin
                    distance = float(np.linalg.norm(pts[0] - wrists[side]))
                    # Keep only a hand of this wrist (a large crop can also hold the other hand).
                    if distance > min(float(np.linalg.norm(pts[0] - other)), 0.5 * side_px):
                        continue
                    if best is None or distance < best[0]:
                        best = (distance, pts, float(handedness.classification[0].score))
                if best is None:
                    continue
                _, pts, score = best
                found[side] = HandKeypoints(side, pts, np.full(21, score, dtype=np.float32))
                break
        return found


def _check_image(image_rgb: np.ndarray) -> np.ndarray:
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidInputError(f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def _square_crop(image: np.ndarray, centre: np.ndarray, side: float, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop a square (zero padded outside the image) and resize it to out_size; returns (crop, top-left xy)."""
    import cv2  # installed with mediapipe

    x0, y0 = float(centre[0] - side / 2), float(centre[1] - side / 2)
    scale = out_size / side
    affine = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]], dtype=np.float64)
    crop = cv2.warpAffine(image, affine, (out_size, out_size), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    return np.ascontiguousarray(crop), np.array([x0, y0], dtype=np.float32)
