"""Finding people for the tracker: the full image first, then fallbacks, before reporting "no person".

Why: the legacy mediapipe pose detector returns nothing for some clearly visible people (small in the frame,
partly hidden by a dog or furniture). Running the same detector on a zoomed crop often finds them. Fallbacks, in
`TrackerConfig.fallbacks` order, each tried only while fewer than `max_people` people are found:

* ``crop_search``: crops at `search_zoom` (halves, centre tile, upper part, quadrants: `search_regions`);
* ``last_track``: the boxes of live tracks, expanded (a person who was there a moment ago);
* ``roi``: person boxes given by the caller (the node's `sensor_msgs/RegionOfInterest` topic), expanded.

Keypoints found in a crop are mapped back to full-image pixels. Several people: the shipped detector finds one
person per call, so more people are found only per crop or ROI box and de-duplicated by box overlap. With it,
several people in one frame need ROI boxes, or people far enough apart to fall into different search tiles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ivlm_core.fitting.keypoints import HandKeypoints, HumanKeypoints
from ivlm_core.tracking.person_box import PersonBox
from ivlm_core.tracking.person_crop import PersonCrop, person_crop
from ivlm_core.tracking.tracker_config import TrackerConfig

KeypointDetector = Callable[[np.ndarray], "HumanKeypoints | None"]


@dataclass
class FoundPerson:
    """One detected person: keypoints in full-image pixels, their box, and which strategy found them."""

    keypoints: HumanKeypoints
    box: PersonBox
    source: str  # full_image | crop_search | last_track | roi


@dataclass
class FindResult:
    people: list[FoundPerson]
    tried: list[str] = field(default_factory=list)  # what was run, in order ("full_image", "crop_search x5", ...)
    detector_calls: int = 0
    time_ms: float = 0.0

    @property
    def reason(self) -> str:
        """Why nobody was found (empty when someone was)."""
        if self.people:
            return ""
        return f"no person found (tried: {', '.join(self.tried) or 'nothing'})"


def keypoints_from_crop(keypoints: HumanKeypoints, crop: PersonCrop, image_size: tuple[int, int]) -> HumanKeypoints:
    """Map keypoints detected on `crop` back to full-image pixels (world landmarks are metric: unchanged)."""
    hands = {
        side: HandKeypoints(hand.side, crop.to_full_image(hand.points_2d).astype(np.float32), hand.confidence)
        for side, hand in keypoints.hands.items()
    }
    return replace(
        keypoints,
        image_size=image_size,
        pose_2d=crop.to_full_image(keypoints.pose_2d).astype(np.float32),
        hands=hands,
        person_mask=None,
    )


def search_regions(width: int, height: int, zoom: float) -> list[PersonBox]:
    """Crops of the crop search, most promising first: the two halves along the long side (one person each when
    people stand apart), the centre tile, the upper part (head and torso above an occluder), the quadrants.
    Tiles are 1 / zoom of the image on each side."""
    tile_w, tile_h = width / zoom, height / zoom
    cx, cy = width / 2, height / 2
    if width >= height:
        regions = [PersonBox(0.0, 0.0, tile_w, height), PersonBox(width - tile_w, 0.0, width, height)]
    else:
        regions = [PersonBox(0.0, 0.0, width, tile_h), PersonBox(0.0, height - tile_h, width, height)]
    regions += [
        PersonBox(cx - tile_w / 2, cy - tile_h / 2, cx + tile_w / 2, cy + tile_h / 2),
        PersonBox(cx - tile_w / 2, 0.0, cx + tile_w / 2, min(1.2 * tile_h, height)),
    ]
    for y0 in (0.0, height - tile_h):
        for x0 in (0.0, width - tile_w):
            regions.append(PersonBox(x0, y0, x0 + tile_w, y0 + tile_h))
    return regions


class PersonFinder:
    """Runs a keypoint detector on the full image and, when needed, on fallback crops; de-duplicates people."""

    def __init__(
        self,
        config: TrackerConfig | None = None,
        detector: KeypointDetector | None = None,
        crop_detector: KeypointDetector | None = None,
    ) -> None:
        """`detector` runs on full frames (may keep tracking state); `crop_detector` on crops (defaults to
        `detector` when one is given, else to a static-image mediapipe detector)."""
        self.config = config or TrackerConfig()
        self._detector = detector
        self._crop_detector = crop_detector or detector

    def _full_detector(self) -> KeypointDetector:
        if self._detector is None:
            self._detector = self._mediapipe(static=not self.config.stream_detector)
        return self._detector

    def _static_detector(self) -> KeypointDetector:
        if self._crop_detector is None:
            self._crop_detector = self._mediapipe(static=True)
        return self._crop_detector

    def _mediapipe(self, static: bool) -> KeypointDetector:
        from ivlm_core.fitting.keypoints import MediaPipeKeypointDetector

        return MediaPipeKeypointDetector(
            detect_hands=self.config.detect_hands, segmentation=False, static_image_mode=static
        )

    def warm_up(self, height: int = 480, width: int = 640) -> None:
        """Build the detectors now (mediapipe graphs take ~0.1-0.5 s to start) instead of on the first frame."""
        image = np.full((height, width, 3), 128, dtype=np.uint8)
        self._full_detector()(image)
        if self.config.fallbacks:
            self._static_detector()(np.ascontiguousarray(image[: height // 2, : width // 2]))

    def close(self) -> None:
        for detector in {id(d): d for d in (self._detector, self._crop_detector) if d is not None}.values():
            close = getattr(detector, "close", None)
            if close is not None:
                close()

    def find(
        self,
        image_rgb: np.ndarray,
        track_boxes: Sequence[PersonBox] = (),
        roi_boxes: Sequence[PersonBox] = (),
        max_people: int | None = None,
        crop_search: bool = True,
    ) -> FindResult:
        """Up to `max_people` people (default: the config's), full image first, then the fallbacks in order.

        `crop_search=False` skips that fallback this time (the tracker rate-limits it: it costs several calls)."""
        start = time.perf_counter()
        cfg = self.config
        limit = cfg.max_people if max_people is None else max_people
        height, width = image_rgb.shape[:2]
        result = FindResult(people=[])

        def enough() -> bool:
            return len(result.people) >= limit

        result.tried.append("full_image")
        result.detector_calls += 1
        self._add(result, self._full_detector()(image_rgb), "full_image", None)
        for strategy in cfg.fallbacks:
            if enough():
                break
            if strategy == "crop_search" and not crop_search:
                result.tried.append("crop_search skipped (ran less than crop_search_interval_s ago)")
                continue
            # Regions already explained by a found person are skipped: the same person again costs a call.
            if strategy == "crop_search":
                regions = [
                    r
                    for r in search_regions(width, height, cfg.search_zoom)
                    if sum(r.intersection(p.box) for p in result.people) < 0.8 * r.area
                ][: cfg.max_search_crops]
            else:
                boxes, factor = (
                    (track_boxes, cfg.track_box_expansion)
                    if strategy == "last_track"
                    else (roi_boxes, cfg.roi_box_expansion)
                )
                regions = [b.expanded(factor) for b in boxes if not any(self._same(b, p.box) for p in result.people)]
            regions = [r for r in regions if r.clipped(width, height).area >= 16 * 16]
            result.tried.append(f"{strategy} x{len(regions)}")
            for region in regions:
                if enough():
                    break
                crop = person_crop(image_rgb, region.clipped(width, height), margin=0.0, square=False)
                result.detector_calls += 1
                found = self._static_detector()(crop.image)
                if found is not None:
                    self._add(result, keypoints_from_crop(found, crop, (height, width)), strategy, crop.box)
        result.time_ms = (time.perf_counter() - start) * 1e3
        return result

    def _add(self, result: FindResult, keypoints: HumanKeypoints | None, source: str, region: PersonBox | None) -> None:
        """Keep a detection if it is a person (enough confident landmarks, inside its crop) and a new one."""
        cfg = self.config
        if keypoints is None:
            return
        seen = keypoints.pose_confidence >= cfg.min_confidence
        if int(seen.sum()) < cfg.min_keypoints or not np.all(np.isfinite(keypoints.pose_2d[seen])):
            return  # too little seen, or a broken detection (NaN) that would poison the track's fit
        box = PersonBox.from_points(keypoints.pose_2d, keypoints.pose_confidence, cfg.min_confidence)
        if region is not None and not region.contains(*box.centre):
            return  # landmarks extrapolated far outside the crop: not a person seen in it
        # The box is what the detector saw: landmarks it extrapolated past the crop / image edge are cut off.
        height, width = keypoints.image_size
        seen = region.clipped(width, height) if region is not None else PersonBox(0.0, 0.0, width, height)
        box = PersonBox(max(box.x0, seen.x0), max(box.y0, seen.y0), min(box.x1, seen.x1), min(box.y1, seen.y1))
        if any(self._same(box, person.box) for person in result.people):
            return
        result.people.append(FoundPerson(keypoints, box, source))

    def _same(self, a: PersonBox, b: PersonBox) -> bool:
        """Two boxes of one person: they overlap much, or one lies mostly inside the other (a partial view)."""
        return a.iou(b) > self.config.duplicate_iou or a.overlap_of_smaller(b) > self.config.duplicate_overlap
