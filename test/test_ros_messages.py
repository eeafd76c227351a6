"""Pipeline results -> ivlm_msgs / debug image, with the pipeline's own result dataclasses."""

from __future__ import annotations

import numpy as np
import pytest

from ivlm_core.pipeline import (
    BodyPlacement,
    HumanContactEstimate,
    InteractionResult,
    ObjectContactEstimate,
    ObjectPlacement,
)

pytestmark = pytest.mark.ros

RNG = np.random.default_rng(3)
VIEWS = RNG.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
LOGITS = np.where(np.arange(32)[None, :, None] < 16, 5.0, -5.0).repeat(32, axis=2).repeat(4, axis=0)


def _result(placed: bool) -> InteractionResult:
    body_vertices = RNG.normal(size=(50, 3)).astype(np.float32) * 0.2 + np.array([0, 0, 2.0], np.float32)
    body_faces = RNG.integers(0, 50, (80, 3))
    contact = np.linspace(0, 1, 50, dtype=np.float32)
    human = HumanContactEstimate(
        True, "The contacting body parts are <hands>, [SEG].", ["hands"], VIEWS, LOGITS, contact, "smplx"
    )
    obj_vertices = RNG.normal(size=(20, 3)).astype(np.float32) * 0.05
    obj = ObjectContactEstimate(
        "bottle",
        "/data/bottle.obj",
        obj_vertices,
        RNG.integers(0, 20, (30, 3)),
        True,
        np.linspace(0, 1, 20, dtype=np.float32),
        "hold",
        "The affordance is hold",
        VIEWS,
        LOGITS,
    )
    rotation = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)  # 90 deg about z
    body = BodyPlacement(
        placed,
        "ok" if placed else "no K",
        body_vertices if placed else None,
        body_faces if placed else None,
        {
            "betas": np.ones(10),
            "global_orient": np.array([0.1, 0.2, 0.3]),
            "body_pose": np.zeros(63),
            "transl": np.array([0.0, 0.1, 2.0]),
        }
        if placed
        else {},
    )
    obj_place = ObjectPlacement(
        placed,
        "fitted" if placed else "no mask",
        rotation,
        np.array([0.1, 0.2, 1.5]),
        1.2,
        obj_vertices @ rotation.T + [0.1, 0.2, 1.5] if placed else None,
        {"loss_total": 0.5, "iterations": 40, "contact_distance_m": 0.01},
    )
    return InteractionResult(
        "bottle", "interaction", human, obj, (body_vertices, body_faces), body, obj_place, {"total": 12.0}
    )


def _header():
    from builtin_interfaces.msg import Time

    from ivlm_ros.messages import make_header

    return make_header(Time(sec=42, nanosec=7), "camera_color_optical_frame")


def test_human_contact_message() -> None:
    from ivlm_ros.messages import human_contact_msg

    result = _result(placed=False)
    msg = human_contact_msg(_header(), "bottle", "model-x", result.human, 0.6)
    assert msg.header.stamp.sec == 42 and msg.header.frame_id == "camera_color_optical_frame"
    assert msg.object_query == "bottle" and msg.model_id == "model-x" and msg.contact_found
    assert msg.body_model == msg.BODY_MODEL_SMPLX == "smplx"
    np.testing.assert_array_equal(np.asarray(msg.vertex_contact, np.float32), result.human.vertex_contact)
    np.testing.assert_array_equal(
        np.asarray(msg.contact_vertex_ids), np.flatnonzero(result.human.vertex_contact >= 0.6)
    )
    assert list(msg.body_parts) == ["hands"] and msg.contact_threshold == pytest.approx(0.6)
    empty = human_contact_msg(_header(), "bottle", "m", None, 0.5)
    assert not empty.contact_found and len(empty.vertex_contact) == 0


def test_object_contact_points_only_when_placed() -> None:
    from ivlm_ros.messages import object_contact_msg

    for placed in (False, True):
        result = _result(placed)
        msg = object_contact_msg(_header(), "m", result.object, result.object_placement, 0.5)
        assert msg.object_label == "bottle" and msg.mesh_resource == "file:///data/bottle.obj"
        assert msg.affordance == "hold"
        ids = np.flatnonzero(result.object.vertex_contact >= 0.5)
        np.testing.assert_array_equal(np.asarray(msg.contact_vertex_ids), ids)
        points = np.array([[p.x, p.y, p.z] for p in msg.contact_points]).reshape(-1, 3)
        if placed:
            np.testing.assert_allclose(points, result.object_placement.vertices[ids], atol=1e-6)
        else:
            assert len(points) == 0


def test_interaction_estimate_carries_placements_meshes_and_fit_report() -> None:
    from ivlm_ros.messages import interaction_estimate_msg

    result = _result(placed=True)
    msg = interaction_estimate_msg(_header(), result, "m", 0.5, 0.5)
    assert msg.human_placed and msg.object_placed and msg.has_object_contact
    assert msg.human.header.stamp.sec == 42 and msg.object.header.stamp.sec == 42
    assert len(msg.human_mesh.vertices) == 50 and len(msg.human_mesh.triangles) == 80
    np.testing.assert_array_equal(msg.human_mesh.triangles[3].vertex_indices, result.body_placement.faces[3])
    np.testing.assert_allclose(msg.human_params.global_orient, [0.1, 0.2, 0.3], atol=1e-6)
    assert len(msg.human_params.betas) == 10 and msg.human_params.transl[2] == pytest.approx(2.0)
    q = msg.object_pose.orientation
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)
    assert msg.object_pose.position.z == pytest.approx(1.5) and msg.object_scale == pytest.approx(1.2)
    assert len(msg.object_mesh.vertices) == 20
    assert msg.fit_report.success and msg.fit_report.iterations == 40
    assert msg.fit_report.loss_total == pytest.approx(0.5)

    unplaced = interaction_estimate_msg(_header(), _result(placed=False), "m", 0.5, 0.5)
    assert not unplaced.human_placed and unplaced.human_placement_status == "no K"
    assert len(unplaced.human_mesh.vertices) == 0 and not unplaced.fit_report.success


def test_object_pose_stamped_only_when_the_object_is_placed() -> None:
    from ivlm_ros.messages import object_pose_stamped_msg

    placed = _result(placed=True).object_placement
    pose = object_pose_stamped_msg(_header(), placed)
    assert pose is not None and pose.header == _header()
    q = pose.pose.orientation
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)
    assert pose.pose.position.z == pytest.approx(1.5)
    assert object_pose_stamped_msg(_header(), _result(placed=False).object_placement) is None
    assert object_pose_stamped_msg(_header(), None) is None


def test_smplx_params_message_round_trips_to_the_pipeline_parameters() -> None:
    from ivlm_core.fitting.external_body import parse_smplx_params
    from ivlm_ros.messages import smplx_params_from_msg, smplx_params_msg

    params = {
        "betas": RNG.normal(size=10).astype(np.float32),
        "global_orient": np.array([3.1, 0.0, 0.1], np.float32),
        "body_pose": RNG.normal(size=63).astype(np.float32),
        "right_hand_pose": RNG.normal(size=45).astype(np.float32),
        "transl": np.array([0.1, 0.2, 2.0], np.float32),
    }
    back = smplx_params_from_msg(smplx_params_msg(_header(), params))
    assert back["left_hand_pose"].size == 0  # empty = flat hand
    parsed = parse_smplx_params(back)
    for name, value in params.items():
        np.testing.assert_array_equal(parsed[name], value)
    assert not parsed["left_hand_pose"].any() and parsed["left_hand_pose"].shape == (45,)


def test_messages_round_trip_through_rclpy_serialisation() -> None:
    from ivlm_msgs.msg import InteractionEstimate
    from rclpy.serialization import deserialize_message, serialize_message

    from ivlm_ros.messages import interaction_estimate_msg

    msg = interaction_estimate_msg(_header(), _result(placed=True), "m", 0.5, 0.5)
    back = deserialize_message(serialize_message(msg), InteractionEstimate)
    np.testing.assert_array_equal(back.human.vertex_contact, msg.human.vertex_contact)
    np.testing.assert_array_equal(back.object.contact_vertex_ids, msg.object.contact_vertex_ids)
    assert back.human_mesh == msg.human_mesh and back.object_pose == msg.object_pose
    assert back.human.generated_text == msg.human.generated_text and back.header == msg.header


def test_diagnostics_message() -> None:
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus

    from ivlm_ros.messages import diagnostics_msg

    msg = diagnostics_msg(
        Time(sec=1),
        "ivlm",
        DiagnosticStatus.ERROR,
        "model not loaded",
        {"model_loaded": False, "latency_ms": 1.23456, "frames_dropped": 3},
        "cpu",
    )
    status = msg.status[0]
    assert (
        status.level == DiagnosticStatus.ERROR
        and status.name == "ivlm: model"
        and status.hardware_id == "cpu"
    )
    assert {kv.key: kv.value for kv in status.values} == {
        "model_loaded": "false",
        "latency_ms": "1.235",
        "frames_dropped": "3",
    }


def test_debug_image_has_the_photo_and_one_view_strip_per_estimate() -> None:
    from ivlm_ros.debug_image import compose_debug_image

    photo = np.full((60, 80, 3), 30, dtype=np.uint8)
    result = _result(placed=True)
    k = np.array([[40.0, 0, 40], [0, 40.0, 30], [0, 0, 1]])
    image = compose_debug_image(photo, result, k, 0.5, 0.5)
    assert image.shape == (60 + 2 * 20, 80, 3) and image.dtype == np.uint8
    assert np.any(image[:60] != 30)  # projected contacts were drawn on the photo
    strip = image[60:80]
    # left half of every view is masked (logit 5): blended towards red
    assert strip[:, :5, 0].mean() > strip[:, :5, 2].mean()
    no_k = compose_debug_image(photo, result, None, 0.5, 0.5)
    assert np.all(no_k[:60] == 30)


def test_fit_report_carries_the_hypotheses_confidence_and_ambiguity() -> None:
    from ivlm_core.pipeline import ObjectPlacement
    from ivlm_ros.messages import fit_report_msg

    status = "ok; ambiguous: a pose 180 deg / 0.4 cm away fits almost as well (loss gap 0.010 < 0.05)"
    report = {"loss_total": 0.2, "iterations": 190, "hypotheses": 24, "loss_gap": 0.01, "ambiguous": 1.0,
              "runner_up_rotation_deg": 180.0, "runner_up_translation_m": 0.004, "contact_regions": 2.0,
              "contact_regions_touched": 1.0}
    msg = fit_report_msg(ObjectPlacement(True, status, report=report))
    assert msg.success and msg.message == status and msg.ambiguous
    assert (msg.contact_regions, msg.contact_regions_touched) == (2, 1)  # one region taken as a false contact
    assert msg.hypotheses == 24 and msg.iterations == 190
    assert msg.loss_gap == pytest.approx(0.01) and msg.runner_up_rotation_deg == pytest.approx(180.0)
    assert msg.runner_up_translation_m == pytest.approx(0.004)
    confident = fit_report_msg(ObjectPlacement(True, "ok", report={**report, "ambiguous": 0.0, "loss_gap": 0.4}))
    assert not confident.ambiguous and confident.loss_gap == pytest.approx(0.4)
    assert not fit_report_msg(None).ambiguous and fit_report_msg(None).hypotheses == 0
