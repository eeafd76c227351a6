"""Settings of the per-frame body tracker and of the person finder's fallbacks.

Defaults aim at camera rate on a small CPU: a few warm-started iterations per frame, a cold re-fit only when
the person jumps or comes back. `from_dict` rejects unknown keys (a typo must not silently fall back to a
default), like `BodyFitConfig.from_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from ivlm_core.errors import InvalidInputError
from ivlm_core.fitting.body_fit import BodyFitConfig

FALLBACKS: tuple[str, ...] = ("crop_search", "last_track", "roi")


@dataclass
class TrackerConfig:
    """What the tracker does per frame; the body fit's own weights stay in `BodyFitConfig`."""

    max_people: int = 1  # tracks kept at once (the shipped detector finds one person per call: see PersonFinder)
    max_missing_s: float = 1.0  # a track survives this long without its person (judged on image stamps)
    reinit_after_missing_s: float = 0.2  # a person back after a longer gap is re-fitted cold (a dropped frame is not)
    warm_iterations: int = 5  # optimiser steps per frame, from the previous frame's solution
    warm_lr: float = 0.02  # their step size (Adam); smaller than a cold fit's, the start is already close
    cold_iterations_scale: float = 0.3  # cold (re-)fits run BodyFitConfig's schedules times this
    smoothing: float = 0.6  # weight of the new frame in the exponential smoothing (1 = no smoothing)
    jump_box_shift: float = 0.5  # a person box moving by more than this x its diagonal in one frame = a jump
    jump_translation_m: float = 0.5  # a fitted body moving more than this between frames = a jump (re-init)
    jump_rotation_deg: float = 60.0
    refit_error: float = 0.02  # a warm fit worse than this (fraction of the image diagonal) and than twice the
    # track's previous frame is redone cold
    match_iou: float = 0.1  # several people: a found box joins the track whose last box overlaps it most
    duplicate_iou: float = 0.3  # two detections overlapping this much (IoU) are one person
    duplicate_overlap: float = 0.7  # ... or when this much of the smaller box lies in the other
    min_keypoints: int = 6  # a detection needs this many confident pose landmarks (rejects texture ghosts)
    min_confidence: float = 0.3  # landmark confidence counted as seen (box, min_keypoints)
    track_box_expansion: float = 1.5  # the last track's box is searched this much larger
    roi_box_expansion: float = 1.2  # ROI boxes are searched this much larger
    search_zoom: float = 2.0  # crop search tiles are 1 / zoom of the image side
    max_search_crops: int = 6  # at most this many crops per frame in the crop search
    crop_search_interval_s: float = 0.5  # the crop search (several detector calls) runs at most this often
    fallbacks: tuple[str, ...] = FALLBACKS  # tried in this order after the full image, until enough people
    detect_hands: bool = False  # hand landmarks cost ~30-60 ms per frame; off for camera rate
    stream_detector: bool = True  # mediapipe tracking mode on the full image (skips its person detector)

    def __post_init__(self) -> None:
        self.fallbacks = tuple(self.fallbacks)
        unknown = [name for name in self.fallbacks if name not in FALLBACKS]
        if unknown:
            raise InvalidInputError(f"unknown person finder fallbacks {unknown}; known: {list(FALLBACKS)}")
        checks = {
            "max_people": self.max_people >= 1,
            "max_missing_s": self.max_missing_s >= 0,
            "reinit_after_missing_s": self.reinit_after_missing_s >= 0,
            "warm_iterations": self.warm_iterations >= 1,
            "warm_lr": self.warm_lr > 0,
            "cold_iterations_scale": self.cold_iterations_scale > 0,
            "smoothing": 0 < self.smoothing <= 1,
            "search_zoom": self.search_zoom >= 1,
            "max_search_crops": self.max_search_crops >= 0,
            "crop_search_interval_s": self.crop_search_interval_s >= 0,
            "track_box_expansion": self.track_box_expansion > 0,
            "roi_box_expansion": self.roi_box_expansion > 0,
            "min_keypoints": self.min_keypoints >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise InvalidInputError(f"tracker settings out of range: {values}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrackerConfig:
        """From a config mapping (e.g. a `tracking:` YAML section); unknown keys are an error, not ignored."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InvalidInputError(f"unknown tracker settings {unknown}; known: {sorted(known)}")
        converted: dict[str, Any] = {}
        for name, value in values.items():
            default = known[name].default
            try:
                if isinstance(default, bool):
                    if not isinstance(value, bool):
                        raise TypeError
                    converted[name] = value
                elif isinstance(default, int):
                    if isinstance(value, bool) or float(value) != int(float(value)):
                        raise TypeError
                    converted[name] = int(float(value))
                elif isinstance(default, float):
                    if isinstance(value, bool):
                        raise TypeError
                    converted[name] = float(value)
                else:  # fallbacks: a list of names or one comma-separated string
                    items = value.split(",") if isinstance(value, str) else list(value)
                    converted[name] = tuple(str(item).strip() for item in items if str(item).strip())
            except (TypeError, ValueError) as err:
                raise InvalidInputError(f"tracker setting {name} must be like {default!r}, got {value!r}") from err
        return cls(**converted)

    def warm_fit_config(self, base: BodyFitConfig | None = None) -> BodyFitConfig:
        """The body fit settings of per-frame warm fits: `base` with the tracker's iterations and step size."""
        return replace(self.cold_fit_config(base), lr=self.warm_lr)

    def cold_fit_config(self, base: BodyFitConfig | None = None) -> BodyFitConfig:
        """The body fit settings of cold (re-)fits: `base` with scaled schedules and the tracker's thresholds."""
        base = base or BodyFitConfig()

        def scaled(n: int) -> int:
            return max(round(n * self.cold_iterations_scale), 1)

        return replace(
            base,
            iters_warm=self.warm_iterations,
            iters_pose_init=scaled(base.iters_pose_init),
            iters_camera=scaled(base.iters_camera),
            iters_full=scaled(base.iters_full),
            smoothing=self.smoothing,
            reset_translation_m=self.jump_translation_m,
            reset_rotation_deg=self.jump_rotation_deg,
            refit_error=self.refit_error,
        )
