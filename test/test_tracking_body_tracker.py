"""BodyTracker on a synthetic moving person: warm tracking accuracy, re-initialisation, ids across gaps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ivlm_core.errors import InvalidInputError
from ivlm_core.testing.synthetic_keypoints import (
    ScriptedKeypointDetector,
    ScriptedPeopleDetector,
    coordinate_image,
    model_points,
    project_keypoints,
)
from ivlm_core.tracking import BodyTracker, PersonBox, TrackerConfig

IMAGE = np.zeros((480, 640, 3), dtype=np.uint8)
CAMERA_K = np.array([[600.0, 0.0, 330.0], [0.0, 600.0, 235.0], [0.0, 0.0, 1.0]])
FPS = 30.0


@pytest.fixture(scope="module")
def body_dir(tmp_path_factory: pytest.TempPathFactory):
    from ivlm_core.testing.synthetic_body import write_synthetic_smplx

    root = tmp_path_factory.mktemp("tracker_models")
    write_synthetic_smplx(root)
    return root


def _pose(t: float, shift_x: float = 0.0) -> dict[str, np.ndarray]:
    """A person walking sideways and turning, elbow swinging (t in seconds)."""
    pose = np.zeros((21, 3), dtype=np.float32)
    pose[15, 2], pose[16, 2] = -0.9, 0.9
    pose[17, 1], pose[18, 1] = -0.8 + 0.3 * np.sin(4 * t), 0.6
    pose[3, 0], pose[4, 0] = 0.3, 0.5
    orient = Rotation.from_euler("y", 20 + 15 * np.sin(2 * t), degrees=True) * Rotation.from_rotvec([np.pi, 0, 0])
    return {
        "global_orient": orient.as_rotvec().astype(np.float32),
        "body_pose": pose.reshape(63),
        "betas": np.zeros(10, dtype=np.float32),
        "transl": np.array([0.1 + 0.4 * np.sin(t) + shift_x, 0.1, 3.2 + 0.2 * np.cos(t)], dtype=np.float32),
    }


def _tracker(body_dir, **settings) -> tuple[BodyTracker, ScriptedKeypointDetector]:
    detector = ScriptedKeypointDetector()
    tracker = BodyTracker.from_body_model_dir(
        body_dir, config=TrackerConfig(fallbacks=(), **settings), detector=detector
    )
    assert tracker.available, tracker.unavailable_reason
    return tracker, detector


def _show(tracker: BodyTracker, detector: ScriptedKeypointDetector, params) -> None:
    detector.keypoints = None if params is None else project_keypoints(tracker.fitter, params, CAMERA_K, (480, 640))


def _joint_error_m(tracker: BodyTracker, fitted, truth) -> float:
    return float(
        np.linalg.norm(
            model_points(tracker.fitter, fitted)[:22] - model_points(tracker.fitter, truth)[:22], axis=1
        ).mean()
    )


def test_warm_track_follows_a_moving_person(body_dir):
    tracker, detector = _tracker(body_dir)
    errors, reinits, ids = [], [], set()
    for frame in range(45):
        stamp = frame / FPS
        truth = _pose(stamp)
        _show(tracker, detector, truth)
        update = tracker.update(IMAGE, CAMERA_K, stamp)
        [body] = update.bodies
        assert body.missing_s == 0 and body.source == "full_image" and body.placement.placed
        assert body.placement.vertices.shape == (tracker.layer.num_vertices, 3)
        errors.append(_joint_error_m(tracker, body.placement.params, truth))
        reinits.append(body.reinitialised)
        ids.add(body.track_id)
        assert set(update.timings_ms) >= {"find", "fit", "total"}
    assert ids == {1}
    assert reinits[0] and not any(reinits[1:])  # one cold fit, then warm frames only
    assert np.mean(errors[5:]) < 0.08 and max(errors[5:]) < 0.12, errors  # metres, mean over 22 body joints
    box = update.bodies[0].box
    assert 0 < box.x0 < box.x1 < 640 and 0 < box.y0 < box.y1 < 480


def test_jump_reinitialises_and_keeps_the_single_track(body_dir):
    tracker, detector = _tracker(body_dir)
    for frame in range(4):
        _show(tracker, detector, _pose(frame / FPS))
        tracker.update(IMAGE, CAMERA_K, frame / FPS)
    truth = _pose(4 / FPS, shift_x=1.2)  # 1.2 m to the side in one frame
    _show(tracker, detector, truth)
    [body] = tracker.update(IMAGE, CAMERA_K, 4 / FPS).bodies
    assert body.reinitialised and not body.placement.smoothed and body.track_id == 1
    assert _joint_error_m(tracker, body.placement.params, truth) < 0.15
    _show(tracker, detector, _pose(5 / FPS, shift_x=1.2))
    [body] = tracker.update(IMAGE, CAMERA_K, 5 / FPS).bodies
    assert not body.reinitialised and body.placement.smoothed


def test_a_gap_between_processed_frames_is_not_an_absence(body_dir):
    """A busy node may process frames 1.5 s apart: a person seen in both keeps the id."""
    tracker, detector = _tracker(body_dir, max_missing_s=1.0)
    _show(tracker, detector, _pose(0.0))
    first = tracker.update(IMAGE, CAMERA_K, 0.0).bodies[0].track_id
    _show(tracker, detector, _pose(1.5))
    [body] = tracker.update(IMAGE, CAMERA_K, 1.5).bodies
    assert body.track_id == first and body.missing_s == 0


def test_track_id_survives_a_short_gap_and_not_a_long_one(body_dir):
    tracker, detector = _tracker(body_dir, max_missing_s=1.0)
    stamp = 0.0
    for _ in range(3):
        _show(tracker, detector, _pose(stamp))
        tracker.update(IMAGE, CAMERA_K, stamp)
        stamp += 1 / FPS
    first_id = tracker.track_ids[0]
    _show(tracker, detector, None)  # one dropped frame: not a loss, the track stays warm
    tracker.update(IMAGE, CAMERA_K, stamp)
    stamp += 1 / FPS
    _show(tracker, detector, _pose(stamp))
    [kept] = tracker.update(IMAGE, CAMERA_K, stamp).bodies
    assert kept.track_id == first_id and not kept.reinitialised
    stamp += 1 / FPS
    _show(tracker, detector, None)  # occluded for 0.5 s
    gap_end = stamp + 0.5
    while stamp < gap_end - 1e-9:
        update = tracker.update(IMAGE, CAMERA_K, stamp)
        [coasting] = update.bodies
        assert coasting.missing_s > 0 and coasting.track_id == first_id and not update.fresh_bodies
        assert "no person found" in update.status
        stamp += 1 / FPS
    _show(tracker, detector, _pose(stamp))
    [back] = tracker.update(IMAGE, CAMERA_K, stamp).bodies
    assert back.track_id == first_id and back.missing_s == 0
    assert back.reinitialised  # keypoints back after a loss: cold fit
    _show(tracker, detector, None)  # now gone for 2 s (stamps, not wall time)
    update = tracker.update(IMAGE, CAMERA_K, stamp + 2.0)
    assert update.bodies == [] and "lost" in update.status
    _show(tracker, detector, _pose(stamp + 2.1))
    [new] = tracker.update(IMAGE, CAMERA_K, stamp + 2.1).bodies
    assert new.track_id not in (first_id,) and new.track_id > first_id and new.reinitialised


def test_ids_are_never_reused_and_stamps_going_back_reset(body_dir):
    tracker, detector = _tracker(body_dir)
    _show(tracker, detector, _pose(0.0))
    first = tracker.update(IMAGE, CAMERA_K, 10.0).bodies[0].track_id
    tracker.reset()
    second = tracker.update(IMAGE, CAMERA_K, 10.1).bodies[0].track_id
    update = tracker.update(IMAGE, CAMERA_K, 5.0)  # a bag starting over
    assert "stamp went back" in update.status
    assert len({first, second, update.bodies[0].track_id}) == 3
    ids = tracker.track_ids
    with pytest.raises(InvalidInputError):
        tracker.update(IMAGE, CAMERA_K, float("nan"))
    with pytest.raises(InvalidInputError, match="RGB uint8"):
        tracker.update(IMAGE.astype(np.float32), CAMERA_K, 6.0)
    with pytest.raises(InvalidInputError, match="camera_k"):
        tracker.update(IMAGE, np.zeros((3, 3)), 6.0)
    assert tracker.track_ids == ids  # bad input changed nothing


def test_nobody_and_missing_body_model_are_reported_not_raised(body_dir, tmp_path):
    tracker, detector = _tracker(body_dir)
    tracker.warm_up()
    assert detector.calls == 1  # the full-frame detector ran once; no fallbacks configured
    update = tracker.update(IMAGE, CAMERA_K, 0.0)
    assert update.bodies == [] and update.status.startswith("no person found (tried: full_image")
    missing = BodyTracker.from_body_model_dir(tmp_path / "nowhere", detector=detector)
    assert not missing.available
    update = missing.update(IMAGE, CAMERA_K, 0.0)
    assert update.bodies == [] and "nowhere" in update.status and "smpl-x.is.tue.mpg.de" in update.status
    unset = BodyTracker.from_body_model_dir(None, detector=detector)
    assert "body_model_dir" in unset.update(IMAGE, CAMERA_K, 0.0).status


def test_two_people_get_two_tracks_from_roi_boxes(body_dir):
    """Several people: one detector call per ROI box; each gets its own id and box, and keeps them."""
    detector = ScriptedPeopleDetector()
    config = TrackerConfig(max_people=2, fallbacks=("roi",))
    tracker = BodyTracker.from_body_model_dir(body_dir, config=config, detector=detector)
    truths = (_pose(0.0, shift_x=-0.7), _pose(0.0, shift_x=0.8))
    detector.people = [project_keypoints(tracker.fitter, p, CAMERA_K, (480, 640)) for p in truths]
    boxes = [PersonBox.from_points(k.pose_2d, k.pose_confidence) for k in detector.people]
    assert boxes[0].x1 < boxes[1].x0  # separated people
    image = coordinate_image(480, 640)
    ids_per_frame = []
    for frame in range(3):
        update = tracker.update(image, CAMERA_K, frame / FPS, roi_boxes=boxes)
        assert len(update.fresh_bodies) == 2, update.status
        by_x = sorted(update.bodies, key=lambda b: b.box.centre[0])
        ids_per_frame.append([b.track_id for b in by_x])
        assert [b.source for b in by_x] == ["full_image", "roi"]
        for body, box in zip(by_x, boxes):
            assert body.box.iou(box) > 0.9
    assert ids_per_frame[0] == ids_per_frame[1] == ids_per_frame[2] and len(set(ids_per_frame[0])) == 2
    single = BodyTracker.from_body_model_dir(body_dir, config=TrackerConfig(fallbacks=("roi",)), detector=detector)
    assert len(single.update(image, CAMERA_K, 0.0, roi_boxes=boxes).bodies) == 1  # max_people = 1


def test_tracker_config_rejects_unknown_and_bad_settings():
    config = TrackerConfig.from_dict({"max_people": 2, "max_missing_s": 1, "fallbacks": "roi, last_track"})
    assert config.max_people == 2 and config.max_missing_s == 1.0 and config.fallbacks == ("roi", "last_track")
    with pytest.raises(InvalidInputError, match="unknown tracker settings"):
        TrackerConfig.from_dict({"max_peple": 2})
    with pytest.raises(InvalidInputError, match="max_people"):
        TrackerConfig.from_dict({"max_people": 0})
    with pytest.raises(InvalidInputError, match="max_people"):
        TrackerConfig.from_dict({"max_people": 1.5})
    with pytest.raises(InvalidInputError, match="unknown person finder fallbacks"):
        TrackerConfig.from_dict({"fallbacks": ["tiles"]})
    with pytest.raises(InvalidInputError, match="detect_hands"):
        TrackerConfig.from_dict({"detect_hands": "yes"})
    warm = TrackerConfig(warm_iterations=3, warm_lr=0.01).warm_fit_config()
    assert warm.iters_warm == 3 and warm.lr == 0.01


def test_crop_search_is_rate_limited_on_image_stamps(body_dir):
    """Nobody in view: the full image every frame, the crop search (6 crops) only every 0.5 s of stamps."""
    detector = ScriptedKeypointDetector()
    config = TrackerConfig(fallbacks=("crop_search",), crop_search_interval_s=0.5, max_search_crops=6)
    tracker = BodyTracker.from_body_model_dir(body_dir, config=config, detector=detector)
    statuses = [tracker.update(IMAGE, CAMERA_K, frame / FPS).status for frame in range(30)]
    assert detector.calls == 30 + 2 * 6  # searches at 0 s and 0.5 s
    assert statuses[0] == "no person found (tried: full_image, crop_search x6)"
    assert "crop_search skipped" in statuses[1]


def test_a_jump_in_depth_is_caught_by_the_fit_not_the_box(body_dir):
    """Stepping 1.5 m back barely moves the box centre; the warm fit cannot follow, so the track re-fits cold."""
    tracker, detector = _tracker(body_dir)
    for frame in range(3):
        _show(tracker, detector, _pose(frame / FPS))
        tracker.update(IMAGE, CAMERA_K, frame / FPS)
    truth = _pose(3 / FPS)
    truth["transl"] = truth["transl"] + np.array([0.0, 0.0, 1.5], dtype=np.float32)
    _show(tracker, detector, truth)
    [body] = tracker.update(IMAGE, CAMERA_K, 3 / FPS).bodies
    assert body.reinitialised and body.reinit_reason in ("warm fit drifted", "body jump"), body.reinit_reason
    assert body.placement.reprojection_error_rel < 0.02
    assert abs(body.placement.params["transl"][2] - truth["transl"][2]) < 0.4


def test_broken_keypoints_never_poison_a_track(body_dir):
    tracker, detector = _tracker(body_dir)
    _show(tracker, detector, _pose(0.0))
    [good] = tracker.update(IMAGE, CAMERA_K, 0.0).bodies
    detector.keypoints.pose_2d[:] = np.nan
    update = tracker.update(IMAGE, CAMERA_K, 1 / FPS)
    assert not update.fresh_bodies and update.bodies[0].missing_s > 0
    _show(tracker, detector, _pose(2 / FPS))
    [back] = tracker.update(IMAGE, CAMERA_K, 2 / FPS).bodies
    assert back.track_id == good.track_id and np.all(np.isfinite(back.placement.vertices))
