"""PersonFinder on real photos (mediapipe): fallbacks on the occluded set, two people side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ivlm_core.bench.person_detection import on_person
from ivlm_core.testing.occluded_people import SAMPLE_PERSON_BOXES, occluded_people
from ivlm_core.testing.synthetic_keypoints import ScriptedPeopleDetector, coordinate_image
from ivlm_core.tracking import BodyTracker, PersonBox, PersonFinder, TrackerConfig
from ivlm_core.tracking.person_finder import search_regions

SAMPLES = Path(__file__).parent / "data" / "samples"
CAMERA_K = np.array([[700.0, 0.0, 512.0], [0.0, 700.0, 256.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("mediapipe", reason="keypoint detection is the optional mediapipe capability")
    from ivlm_core.fitting.keypoints import MediaPipeKeypointDetector

    with MediaPipeKeypointDetector(detect_hands=False, segmentation=False) as mediapipe:
        yield mediapipe


def test_occluded_set_is_deterministic_and_labelled():
    first, second = occluded_people(SAMPLES), occluded_people(SAMPLES)
    assert len(first) >= 20 and len({p.name for p in first}) == len(first)
    for a, b in zip(first, second):
        assert a.name == b.name and np.array_equal(a.image, b.image)
        assert a.image.shape == (480, 640, 3) and a.person_box.area > 0
        assert a.person_box.clipped(640, 480) == a.person_box


def test_fallbacks_find_more_occluded_people_than_the_plain_detector(detector):
    photos = occluded_people(SAMPLES)
    plain = PersonFinder(TrackerConfig(fallbacks=()), detector)
    finder = PersonFinder(TrackerConfig(fallbacks=("crop_search",)), detector)
    before = after = 0
    for photo in photos:
        plain_people = plain.find(photo.image).people
        found = finder.find(photo.image)
        for person in found.people:  # every box found is on the person, not on an occluder
            assert on_person(person.box, photo.person_box), (photo.name, person.box, person.source)
        before += bool(plain_people)
        after += bool(found.people)
        if not found.people:
            assert found.reason.startswith("no person found (tried: full_image, crop_search x")
    assert after > before, (before, after)
    assert after >= 0.9 * len(photos)


def test_two_people_side_by_side_get_two_tracks(detector, tmp_path):
    """Two sample photos side by side: two tracks, distinct ids, each box on its own half and person."""
    from PIL import Image

    from ivlm_core.testing.synthetic_body import write_synthetic_smplx

    names = ("bench__standing.png", "tennis_racket__serve.png")
    image = np.concatenate([np.asarray(Image.open(SAMPLES / n).convert("RGB")) for n in names], axis=1)
    truths = [PersonBox(*SAMPLE_PERSON_BOXES[names[0]]), PersonBox(*SAMPLE_PERSON_BOXES[names[1]])]
    truths[1] = PersonBox(truths[1].x0 + 512, truths[1].y0, truths[1].x1 + 512, truths[1].y1)
    write_synthetic_smplx(tmp_path)
    config = TrackerConfig(max_people=2)  # crop search, then (between rate-limited searches) the last tracks
    tracker = BodyTracker.from_body_model_dir(tmp_path, config=config, detector=PersonFinder(config, detector))
    ids = []
    for frame in range(3):
        update = tracker.update(image, CAMERA_K, frame / 30)
        assert len(update.fresh_bodies) == 2, update.status
        assert frame == 0 or "crop_search skipped" in update.tried[1], update.tried
        left, right = sorted(update.bodies, key=lambda b: b.box.centre[0])
        assert left.box.x1 <= 512 <= right.box.x0  # each on its own half
        assert on_person(left.box, truths[0]) and on_person(right.box, truths[1])
        ids.append((left.track_id, right.track_id))
    assert ids[0] == ids[1] == ids[2] and ids[0][0] != ids[0][1]


def test_search_regions_cover_the_image_at_the_zoom():
    regions = search_regions(640, 480, 2.0)
    assert regions[0].as_tuple() == (0, 0, 320, 480) and regions[1].as_tuple() == (320, 0, 640, 480)
    assert all(0 <= r.x0 < r.x1 <= 640 and 0 <= r.y0 < r.y1 <= 480 for r in regions)
    assert {(r.width, r.height) for r in regions[2:3] + regions[4:]} == {(320, 240)}
    assert search_regions(480, 640, 2.0)[0].as_tuple() == (0, 0, 480, 320)  # portrait: top and bottom halves


def test_fallback_order_crop_mapping_and_reason():
    """Keypoints found in a crop come back in full-image pixels; a ROI box finds a person the full image lacks."""
    person = _person_keypoints(centre=(500.0, 300.0))
    detector = ScriptedPeopleDetector([person])
    image = coordinate_image(480, 640)
    finder = PersonFinder(TrackerConfig(fallbacks=("last_track", "roi")), detector)
    found = finder.find(image)
    assert [p.source for p in found.people] == ["full_image"]
    roi = PersonBox(430.0, 200.0, 570.0, 400.0)
    found = finder.find(image, roi_boxes=[roi])
    assert len(found.people) == 1 and detector.calls == 2  # max_people found: no fallback runs
    two = PersonFinder(TrackerConfig(max_people=2, fallbacks=("last_track", "roi")), detector)
    found = two.find(image, roi_boxes=[roi])
    assert len(found.people) == 1 and detector.calls == 3  # the ROI box holds the found person: not run
    assert found.tried == ["full_image", "last_track x0", "roi x0"]
    detector.people = [_person_keypoints(centre=(100.0, 100.0)), person]  # the full image sees another person
    found = two.find(image, roi_boxes=[roi])
    assert [p.source for p in found.people] == ["full_image", "roi"]
    np.testing.assert_allclose(found.people[1].keypoints.pose_2d, person.pose_2d, atol=1e-4)
    assert found.people[1].keypoints.image_size == (480, 640)
    detector.people = []
    nobody = two.find(image, track_boxes=[roi], roi_boxes=[roi])
    assert nobody.reason == "no person found (tried: full_image, last_track x1, roi x1)"


def _person_keypoints(centre: tuple[float, float]):
    from ivlm_core.fitting.keypoints import POSE_LANDMARK_NAMES, HumanKeypoints

    rng = np.random.default_rng(int(centre[0]))
    count = len(POSE_LANDMARK_NAMES)
    points = np.asarray(centre, dtype=np.float32) + rng.uniform(-40, 40, size=(count, 2)).astype(np.float32)
    return HumanKeypoints((480, 640), points, np.ones(count, np.float32), np.zeros((count, 3), np.float32))
