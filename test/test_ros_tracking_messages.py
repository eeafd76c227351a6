"""The camera-rate outputs without a node: contact stamps and track ids on the messages, TrackedBodies,
the numpy-fed CDR of InteractionEstimate, per-person marker namespaces and the contact board."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ivlm_core.fitting.body_fit import BodyFitResult
from ivlm_core.pipeline import (
    BodyPlacement,
    ContactEstimate,
    HumanContactEstimate,
    InteractionResult,
    ObjectContactEstimate,
    ObjectPlacement,
)
from ivlm_core.tracking import PersonBox, TrackedBody

pytestmark = pytest.mark.ros

RNG = np.random.default_rng(12)


def _human() -> HumanContactEstimate:
    contact = np.linspace(0, 1, 40, dtype=np.float32)
    return HumanContactEstimate(True, "The contacting body parts are <hands>.", ["hands"], np.zeros((4, 8, 8, 3),
                                np.uint8), None, contact, "smplx")


def _body(placed: bool = True, shift: float = 0.0) -> BodyPlacement:
    vertices = RNG.normal(size=(40, 3)).astype(np.float32) * 0.2 + np.array([shift, 0, 2.0], np.float32)
    joints = np.tile(np.array([shift, 0.0, 2.0], np.float32), (55, 1))
    params = {"betas": np.ones(10), "body_pose": np.arange(63.0), "global_orient": np.zeros(3), "transl": np.ones(3)}
    if not placed:
        return BodyPlacement(False, "no person")
    return BodyPlacement(True, "ok", vertices, RNG.integers(0, 40, (60, 3)), params, joints)


def _result(placed_object: bool = True) -> InteractionResult:
    obj = ObjectContactEstimate("bench", "/m/bench.obj", RNG.normal(size=(12, 3)).astype(np.float32),
                                RNG.integers(0, 12, (20, 3)), True, np.linspace(0, 1, 12, dtype=np.float32),
                                "sit", "text", None, None)
    placement = ObjectPlacement(placed_object, "fitted", np.eye(3, dtype=np.float32), np.array([0, 0, 2.0], np.float32),
                                1.0, obj.vertices + 1.0, {"iterations": 5.0, "loss_total": 0.25})
    return InteractionResult("bench", "interaction", _human(), obj, None, _body(), placement)


def _time(sec: int, nanosec: int = 0):
    from builtin_interfaces.msg import Time

    return Time(sec=sec, nanosec=nanosec)


def test_contact_stamp_and_track_id_reach_every_sub_message() -> None:
    from ivlm_ros.messages import human_contact_msg, interaction_estimate_msg, make_header

    header = make_header(_time(20, 500), "cam")
    msg = interaction_estimate_msg(header, _result(), "Gen", 0.5, 0.5, _time(19, 100), 7)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (20, 500)
    for part in (msg, msg.human, msg.object):
        assert (part.contact_stamp.sec, part.contact_stamp.nanosec) == (19, 100) and part.track_id == 7
    one_shot = human_contact_msg(header, "bench", "Gen", _human(), 0.5)  # the frame's own contact, no track
    assert (one_shot.contact_stamp.sec, one_shot.contact_stamp.nanosec) == (20, 500) and one_shot.track_id == -1
    none_yet = interaction_estimate_msg(header, _result(), "Gen", 0.5, 0.5, _time(0), 2)
    assert none_yet.contact_stamp.sec == 0 and none_yet.contact_stamp.nanosec == 0  # zero: no contact yet


def test_numpy_fed_estimate_bytes_read_back_as_the_rclpy_message() -> None:
    from ivlm_msgs.msg import InteractionEstimate
    from rclpy.serialization import deserialize_message, serialize_message

    from ivlm_ros.messages import interaction_estimate_cdr, interaction_estimate_msg, make_header

    header = make_header(_time(30, 1), "cam")
    for placed_object in (True, False):
        result = _result(placed_object)
        expected = interaction_estimate_msg(header, result, "Gen", 0.5, 0.4, _time(29), 3)
        raw = interaction_estimate_cdr(header, result, "Gen", 0.5, 0.4, _time(29), 3)
        got = deserialize_message(raw, InteractionEstimate)
        assert got == deserialize_message(serialize_message(expected), InteractionEstimate)  # float32 fields
        assert len(got.human_mesh.vertices) == 40 and len(got.object_mesh.vertices) == (12 if placed_object else 0)


def test_tracked_bodies_carry_id_box_source_params_and_contact_stamp() -> None:
    from ivlm_ros.contact_board import PersonBody
    from ivlm_ros.messages import box_from_roi, make_header, roi_msg, tracked_bodies_msg

    body = _body()
    fit = BodyFitResult(True, "ok", body.params, body.vertices, body.faces, body.joints)
    tracked = TrackedBody(4, fit, PersonBox(10.4, 20.0, 50.2, 120.0), "roi", True, 0.0)
    person = PersonBody.from_tracked(tracked)
    assert person.track_id == 4 and person.placement.placed and person.box == (10.4, 20.0, 50.2, 120.0)
    lost = PersonBody(9, BodyPlacement(False, "not seen"), (0, 0, 0, 0), "last_track", False, 0.4)
    header = make_header(_time(40), "cam")
    msg = tracked_bodies_msg(header, [person, lost], "tracking 1", {4: _time(39, 5)})
    assert msg.status == "tracking 1" and [b.track_id for b in msg.bodies] == [4, 9]
    first, second = msg.bodies
    assert (first.box.x_offset, first.box.y_offset, first.box.width, first.box.height) == (10, 20, 41, 100)
    assert first.source == "roi" and first.reinitialised and first.placed and first.has_contact
    assert (first.contact_stamp.sec, first.contact_stamp.nanosec) == (39, 5)
    np.testing.assert_allclose(np.asarray(first.params.body_pose), np.arange(63.0))
    assert first.params.header.frame_id == "cam" and first.header.stamp.sec == 40
    assert not second.placed and not second.has_contact and second.missing_s == pytest.approx(0.4)
    assert len(second.params.betas) == 0
    assert box_from_roi(roi_msg((3.0, 4.0, 13.0, 24.0))) == (3.0, 4.0, 13.0, 24.0)
    assert box_from_roi(roi_msg((5.0, 5.0, 5.0, 9.0))) is None  # empty = "clear"


def test_each_person_gets_a_namespace_and_a_person_who_left_is_deleted() -> None:
    from ivlm_ros.marker_cdr import DELETE
    from ivlm_ros.markers import StaleMarkers, interaction_markers, person_namespace

    stale = StaleMarkers()
    result = _result()
    both = interaction_markers(result, 0.5, 0.5, ns_prefix=person_namespace(1)) + interaction_markers(
        result, 0.5, 0.5, ns_prefix=person_namespace(2)
    )
    names = {m.ns for m in both}
    assert {"person_1/human_mesh", "person_2/human_mesh", "person_1/human_contact", "person_2/object_mesh"} <= names
    assert all(m.action != DELETE for m in stale.with_deletes(both))
    only_one = stale.with_deletes(interaction_markers(result, 0.5, 0.5, ns_prefix=person_namespace(1)))
    deleted = {m.ns for m in only_one if m.action == DELETE}
    assert deleted == {n for n in names if n.startswith("person_2/")}
    assert not [m for m in stale.with_deletes(interaction_markers(result, 0.5, 0.5, ns_prefix="person_1/"))
                if m.action == DELETE]


def test_contact_board_whole_image_fallback_and_ended_tracks() -> None:
    from ivlm_ros.contact_board import WHOLE_IMAGE, ContactBoard, PersonContact, PersonObject

    board = ContactBoard()
    contacts = ContactEstimate("bench", "human_contact", _human(), None)
    version = board.version
    board.put_contact(WHOLE_IMAGE, PersonContact(contacts, _time(1), 1.0, 3))
    board.put_contact(5, PersonContact(contacts, _time(2), 2.0, 5))
    assert board.version == version + 2
    assert board.contact_for(3, whole_image=True).stamp_s == 1.0  # one person per image: the image's contact
    assert board.contact_for(3, whole_image=False) is None  # several people: only their own
    assert board.contact_for(5, whole_image=False).stamp_s == 2.0
    board.put_object(5, PersonObject(ObjectPlacement(True, "ok"), np.zeros(3), 2.0))
    board.keep_tracks({3})
    assert board.contact_for(5, whole_image=False) is None and board.object_for(5) is None
    assert board.contact_for(WHOLE_IMAGE, whole_image=False) is not None  # whole-image entries stay


def test_the_previous_object_moves_with_the_pelvis_for_the_next_fit() -> None:
    from ivlm_ros.contact_board import PersonObject, moved_with_pelvis

    vertices = np.array([[0.0, 0.0, 1.0], [0.1, 0.0, 1.0]], dtype=np.float32)
    evidence = object()  # a fitted frame's evidence: carried as it is (its own body gives the hand's motion)
    placed = ObjectPlacement(True, "ok", np.eye(3), np.array([0.0, 0.0, 1.0]), 1.0, vertices, history=(evidence,))
    fitted = PersonObject(placed, np.array([0.0, 0.0, 2.0]), 1.0)
    moved = moved_with_pelvis(fitted, np.array([0.1, -0.05, 2.0]))
    np.testing.assert_allclose(moved.translation, [0.1, -0.05, 1.0])
    assert moved.history == (evidence,)
    np.testing.assert_allclose(moved.vertices, vertices + np.array([0.1, -0.05, 0.0], dtype=np.float32))
    np.testing.assert_allclose(placed.translation, [0.0, 0.0, 1.0])  # the board's entry is not changed
    assert moved_with_pelvis(fitted, None) is placed  # pelvis unknown now: where it was
    assert moved_with_pelvis(fitted, np.array([np.nan, 0.0, 2.0])) is placed
    assert moved_with_pelvis(PersonObject(ObjectPlacement(False, "not placed"), None, 1.0), np.zeros(3)) is None


def test_the_rate_bench_stream_drifts_a_few_pixels_per_frame() -> None:
    from ivlm_ros.bench.tracking_rate import drifting_frames

    ramp = np.linspace(0, 255, 120)
    photo = np.stack([np.tile(ramp, (90, 1))] * 3, axis=2).astype(np.uint8)  # brightness = column
    frames = drifting_frames(photo, 64, 40, amplitude_px=4.0)
    assert len(frames) == 40 and all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames)
    per_px = float(frames[0][:, -1, 0].mean() - frames[0][:, 0, 0].mean()) / 63  # brightness per pixel
    offsets = [float(f[:, 0, 0].mean()) / per_px for f in frames]  # the window's left edge, in pixels
    assert max(offsets) - min(offsets) > 3.0  # it moves (up to the 4 px amplitude in these 40 frames)...
    assert max(abs(b - a) for a, b in itertools.pairwise(offsets)) <= 1.5  # ...by about a pixel a frame at most
