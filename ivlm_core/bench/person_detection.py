"""Person detection on partly occluded people: the plain detector versus the person finder's fallbacks.

    python -m ivlm_core.bench.person_detection [--samples DIR] [--fallbacks crop_search] [--seed 0]

The set is `ivlm_core.testing.occluded_people` (24 images at 640x480 from the three sample photos: a dog-like
blob, furniture-like boxes, leafy covers or panels over the legs / part of the torso, the person at full size or
shrunk into the scene). "before" = mediapipe's pose detector on the full image (static image mode, one call);
"after" = `PersonFinder` (that call, then the fallbacks: by default the crop search; no track and no ROI box
exist for single photos). A photo counts as detected when a found person's box lies on the true person: its
centre inside the true box and at least half of it overlapping the true box. Times are per photo for "after"
(the detector calls the finder makes; nothing cached). Last line: ``photos=<n> detected_before=<f>
detected_after=<f> ms_mean=<f> ms_worst=<f>``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ivlm_core.bench.machine import describe_machine
from ivlm_core.testing.occluded_people import OccludedPhoto, occluded_people
from ivlm_core.tracking.person_box import PersonBox
from ivlm_core.tracking.person_finder import PersonFinder
from ivlm_core.tracking.tracker_config import TrackerConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


def on_person(found: PersonBox, truth: PersonBox) -> bool:
    """A detection is on the person when its centre is in the true box and half of it overlaps that box."""
    return truth.contains(*found.centre) and found.intersection(truth) >= 0.5 * max(found.area, 1e-9)


def detect_all(
    photos: list[OccludedPhoto], finder: PersonFinder, plain: PersonFinder
) -> tuple[list[bool], list[bool], list[float], list[str]]:
    """(detected before, detected after, ms per photo after, rows) over the photos."""
    before, after, times, rows = [], [], [], []
    for photo in photos:
        plain_found = plain.find(photo.image)
        start = time.perf_counter()
        found = finder.find(photo.image)
        times.append((time.perf_counter() - start) * 1e3)
        before.append(any(on_person(p.box, photo.person_box) for p in plain_found.people))
        after.append(any(on_person(p.box, photo.person_box) for p in found.people))
        how = found.people[0].source if found.people else "none"
        rows.append(
            f"{photo.name:48s} before={int(before[-1])} after={int(after[-1])} by={how:12s} "
            f"calls={found.detector_calls} ms={times[-1]:.0f}"
        )
    return before, after, times, rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "test" / "data" / "samples")
    parser.add_argument("--fallbacks", default="crop_search", help="comma-separated TrackerConfig.fallbacks")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from ivlm_core.fitting.keypoints import MediaPipeKeypointDetector

    args = parse_args(argv)
    photos = occluded_people(args.samples, seed=args.seed)
    if not photos:
        raise SystemExit(f"no labelled sample photos in {args.samples}")
    config = TrackerConfig.from_dict({"fallbacks": args.fallbacks, "stream_detector": False})
    with MediaPipeKeypointDetector(detect_hands=False, segmentation=False) as detector:
        plain = PersonFinder(TrackerConfig(fallbacks=()), detector)
        finder = PersonFinder(config, detector)
        detector(photos[0].image)  # load the graph before timing
        before, after, times, rows = detect_all(photos, finder, plain)
    for row in rows:
        print(row)
    print(
        f"conditions: {len(photos)} occluded 640x480 images from {args.samples.name}/ (seed {args.seed}); "
        f"mediapipe 0.10.14 pose (complexity 1, static image mode, no hands); fallbacks={','.join(config.fallbacks)} "
        f"(zoom {config.search_zoom:g}, up to {config.max_search_crops} crops); "
        f"{describe_machine()}, shared (times inflated under load)"
    )
    print(
        f"photos={len(photos)} detected_before={np.mean(before):.3f} detected_after={np.mean(after):.3f} "
        f"ms_mean={np.mean(times):.1f} ms_worst={np.max(times):.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
