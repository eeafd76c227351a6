"""Per-frame SMPL-X bodies of up to `max_people` tracked people, fast enough for the camera rate.

Per frame: find people (`PersonFinder`: full image, then fallbacks), match them to live tracks by box overlap,
and fit each body with a few warm-started iterations from the track's previous solution, smoothed over time.
A track is re-initialised (cold fit, no smoothing) when its person jumps (box shift in the image, body jump in
3D, or a warm fit that no longer reprojects) and when its keypoints come back after a loss. A track survives
`max_missing_s` without its person, judged on image stamps (not wall time, so bag replays behave like live
streams) and only over frames where it was looked for and missed (a node that processes frames 2 s apart keeps
the id of a person seen in both); its id is never reused. Like `CameraBodyPlacer`, a missing optional asset
(SMPL-X files, mediapipe) never raises: `available` is False and every update says why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ivlm_core.errors import InvalidInputError, IvlmError
from ivlm_core.fitting.body_fit import (
    BodyFitConfig,
    BodyFitResult,
    KeypointBodyFitter,
    StreamBodyFitter,
    load_optional_body_layer,
)
from ivlm_core.fitting.body_layer import BodyLayer
from ivlm_core.fitting.keypoints import HumanKeypoints
from ivlm_core.geometry.intrinsics import checked_camera_k
from ivlm_core.tracking.person_box import PersonBox
from ivlm_core.tracking.person_finder import FoundPerson, KeypointDetector, PersonFinder
from ivlm_core.tracking.tracker_config import TrackerConfig


@dataclass
class TrackedBody:
    """One tracked person in one frame.

    `missing_s == 0`: found and fitted in this frame. `missing_s > 0`: not found in this frame, within
    `max_missing_s`; `placement` and `box` are the last ones seen (consumers that need fresh bodies skip it).
    """

    track_id: int
    placement: BodyFitResult
    box: PersonBox
    source: str  # how the person was found: full_image | crop_search | last_track | roi
    reinitialised: bool  # cold fit this frame (new track, jump, or back after a loss): no smoothing applied
    missing_s: float
    keypoints: HumanKeypoints | None = None  # this frame's keypoints in full-image pixels (None when missing)
    reinit_reason: str = ""  # why: new track | back after a loss | box jump | warm fit drifted | body jump


@dataclass
class TrackingUpdate:
    """The tracker's answer for one image (stamp = that image's)."""

    stamp_s: float
    bodies: list[TrackedBody]
    status: str  # what happened; when no body is fresh, the reason (what the finder tried, or why unavailable)
    timings_ms: dict[str, float] = field(default_factory=dict)  # find, fit, total
    tried: list[str] = field(default_factory=list)  # the finder's strategies in this frame
    detector_calls: int = 0

    @property
    def fresh_bodies(self) -> list[TrackedBody]:
        """Bodies fitted in this frame (not coasting on an earlier one)."""
        return [body for body in self.bodies if body.missing_s == 0]


@dataclass
class _Track:
    track_id: int
    placement: BodyFitResult  # the last fresh body; its params start the next frame's warm fit
    box: PersonBox
    source: str
    last_seen_s: float
    missed_frames: int = 0  # frames since the person was last found


class BodyTracker:
    """Tracks up to `config.max_people` SMPL-X bodies in the camera frame across the frames of one stream."""

    def __init__(
        self,
        layer: BodyLayer | None,
        config: TrackerConfig | None = None,
        detector: KeypointDetector | PersonFinder | None = None,
        unavailable_reason: str = "",
        body_fit: BodyFitConfig | None = None,
    ) -> None:
        """`detector`: a keypoint detector (image -> HumanKeypoints | None, used for full frames and crops) or a
        ready `PersonFinder`; default: mediapipe (tracking mode on full frames, static on crops)."""
        self.config = config or TrackerConfig()
        self.layer = layer
        self.unavailable_reason = unavailable_reason
        if isinstance(detector, PersonFinder):
            self.finder = detector
        else:
            self.finder = PersonFinder(self.config, detector)
        self._frames: StreamBodyFitter | None = None
        if layer is not None:
            # Like CameraBodyPlacer's, but warm fits drift only when clearly worse than the track's own last
            # frame too, and a jump in 3D is re-fitted cold (it may be another person taking the track's place).
            self._frames = StreamBodyFitter(
                KeypointBodyFitter(layer, self.config.warm_fit_config(body_fit)),
                KeypointBodyFitter(layer, self.config.cold_fit_config(body_fit)),
                drift_factor=2.0,
                refit_on_jump=True,
            )
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_stamp_s: float | None = None
        self._last_search_s: float | None = None  # stamp of the last crop search (rate-limited)

    @classmethod
    def from_body_model_dir(
        cls,
        body_model_dir: str | Path | None,
        gender: str = "neutral",
        config: TrackerConfig | None = None,
        detector: KeypointDetector | PersonFinder | None = None,
        body_fit: BodyFitConfig | None = None,
    ) -> BodyTracker:
        """Load SMPL-X from the user's body model folder; without it the tracker says why it cannot track."""
        layer, problem = load_optional_body_layer(body_model_dir, gender, (body_fit or BodyFitConfig()).num_betas)
        return cls(layer, config, detector, f"no body tracking: {problem}" if layer is None else "", body_fit)

    @property
    def available(self) -> bool:
        return self.layer is not None

    @property
    def fitter(self) -> KeypointBodyFitter | None:
        """The per-frame (warm) keypoint fitter; None when unavailable."""
        return self._frames.warm if self._frames is not None else None

    @property
    def track_ids(self) -> list[int]:
        return [track.track_id for track in self._tracks]

    def reset(self) -> None:
        """Forget all tracks (a new stream); ids keep counting up, so an old id never names a new person."""
        self._tracks = []
        self._last_stamp_s = None
        self._last_search_s = None

    def warm_up(self, height: int = 480, width: int = 640) -> None:
        """Pay start-up costs before the first frame: the detector graphs (~0.1-0.5 s each)."""
        self.finder.warm_up(height, width)

    def close(self) -> None:
        self.finder.close()

    def update(
        self,
        image_rgb: np.ndarray,
        camera_k: np.ndarray,
        stamp_s: float,
        roi_boxes: Sequence[PersonBox] = (),
    ) -> TrackingUpdate:
        """Track the people in this image (stamp in seconds, from the image header).

        Malformed input (not an RGB uint8 image, a bad K, a non-finite stamp) raises InvalidInputError before
        any track changes; nobody found, or no body model, is a status, not an error.
        """
        start = time.perf_counter()
        stamp_s = float(stamp_s)
        if not math.isfinite(stamp_s):
            raise InvalidInputError(f"tracker stamp must be a finite number of seconds, got {stamp_s}")
        image = np.asarray(image_rgb)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 16:
            raise InvalidInputError(f"tracker needs an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        k = checked_camera_k(camera_k)  # the one K check the pipeline and the node use
        if self.layer is None:
            return TrackingUpdate(stamp_s, [], self.unavailable_reason)
        notes: list[str] = []
        if self._last_stamp_s is not None and stamp_s < self._last_stamp_s:
            notes.append(f"stamp went back {self._last_stamp_s - stamp_s:.3f} s (a new stream?): tracks reset")
            self.reset()
        self._last_stamp_s = stamp_s
        # Only an absence seen in processed frames ends a track: a gap between processed frames (a busy node,
        # a paused bag) with the person still there keeps the id.
        self._expire(lambda t: t.missed_frames > 0 and stamp_s - t.last_seen_s > self.config.max_missing_s, notes)
        last_search = self._last_search_s
        search_due = last_search is None or stamp_s - last_search >= self.config.crop_search_interval_s
        try:
            found = self.finder.find(image, [t.box for t in self._tracks], roi_boxes, crop_search=search_due)
            if any(step.startswith("crop_search x") for step in found.tried):
                self._last_search_s = stamp_s
        except (IvlmError, RuntimeError) as err:  # RuntimeError: mediapipe's graph failing on a frame
            found = None
            notes.append(f"keypoint detection failed: {err}")
        find_ms = (time.perf_counter() - start) * 1e3
        fit_start = time.perf_counter()
        people = found.people if found is not None else []
        fresh: dict[int, TrackedBody] = {}
        for person, track in self._match(people):
            body = self._fit(person, track, k, stamp_s)
            if body is not None:
                fresh[body.track_id] = body
            else:
                notes.append(f"a person found by {person.source} could not be fitted (too few confident keypoints)")
        fit_ms = (time.perf_counter() - fit_start) * 1e3
        self._expire(
            lambda t: t.track_id not in fresh and stamp_s - t.last_seen_s > self.config.max_missing_s, notes
        )
        bodies = []
        for track in self._tracks:
            if track.track_id in fresh:
                bodies.append(fresh[track.track_id])
            else:
                track.missed_frames += 1
                missing = stamp_s - track.last_seen_s
                bodies.append(TrackedBody(track.track_id, track.placement, track.box, track.source, False, missing))
        if fresh:
            status = f"tracking {len(fresh)} of up to {self.config.max_people} people"
        elif found is not None:
            status = found.reason
        else:
            status = "no person found"
        status = "; ".join([status, *notes])
        total_ms = (time.perf_counter() - start) * 1e3
        return TrackingUpdate(
            stamp_s,
            bodies,
            status,
            {"find": find_ms, "fit": fit_ms, "total": total_ms},
            found.tried if found is not None else [],
            found.detector_calls if found is not None else 0,
        )

    def _expire(self, lost: Callable[[_Track], bool], notes: list[str]) -> None:
        expired = [t.track_id for t in self._tracks if lost(t)]
        if expired:
            notes.append(f"tracks {expired} lost for over {self.config.max_missing_s:g} s")
            self._tracks = [t for t in self._tracks if t.track_id not in expired]

    # -- matching --------------------------------------------------------------------------------------------
    def _match(self, people: list[FoundPerson]) -> list[tuple[FoundPerson, _Track | None]]:
        """Pair people with tracks: greedy by box IoU; one person and one track always pair when max_people = 1."""
        if self.config.max_people == 1 and len(self._tracks) == 1 and people:
            return [(people[0], self._tracks[0])]
        overlaps = [
            (person.box.iou(track.box), i, j) for i, person in enumerate(people) for j, track in enumerate(self._tracks)
        ]
        used_people: set[int] = set()
        used_tracks: set[int] = set()
        matched: list[tuple[FoundPerson, _Track | None]] = []
        for iou, i, j in sorted(overlaps, reverse=True):
            if iou < self.config.match_iou or i in used_people or j in used_tracks:
                continue
            used_people.add(i)
            used_tracks.add(j)
            matched.append((people[i], self._tracks[j]))
        free = self.config.max_people - len(self._tracks)
        for i, person in enumerate(people):
            if i not in used_people and free > 0:
                matched.append((person, None))
                free -= 1
        return matched

    # -- fitting ---------------------------------------------------------------------------------------------
    def _fit(
        self, person: FoundPerson, track: _Track | None, camera_k: np.ndarray, stamp_s: float
    ) -> TrackedBody | None:
        assert self._frames is not None
        # Cold (re-)fit for a new track, a person back after a loss or a jump in the image; the shared stream
        # fit adds a jump in 3D and a warm fit that no longer reprojects onto the keypoints.
        reason = ""
        if track is None:
            reason = "new track"
        elif track.missed_frames and stamp_s - track.last_seen_s > self.config.reinit_after_missing_s:
            reason = "back after a loss"
        elif self._box_jumped(track, person.box):
            reason = "box jump"
        previous = track.placement if track is not None else None
        frame = self._frames.fit_frame(person.keypoints, camera_k, previous, reason)
        result = frame.result
        if not result.placed:
            return None  # the track keeps its last good state
        if track is None:
            track = _Track(self._next_id, result, person.box, person.source, stamp_s)
            self._next_id += 1
            self._tracks.append(track)
        track.placement, track.box, track.source = result, person.box, person.source
        track.last_seen_s, track.missed_frames = stamp_s, 0
        return TrackedBody(
            track.track_id, result, person.box, person.source, bool(frame.reinit_reason), 0.0, person.keypoints,
            frame.reinit_reason,
        )

    def _box_jumped(self, track: _Track, box: PersonBox) -> bool:
        (ax, ay), (bx, by) = track.box.centre, box.centre
        diagonal = max(math.hypot(track.box.width, track.box.height), 1.0)
        return math.hypot(bx - ax, by - ay) > self.config.jump_box_shift * diagonal
