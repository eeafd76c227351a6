"""The real ivlm node in its own process with the tiny random model: images in, typed messages out.

One node process per module (loading takes a few seconds); a probe node in the test process publishes camera
frames through real rclpy/DDS on loopback and asserts on what comes back.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from ivlm_ros.testing.node_harness import FRAME_ID, IMAGE_TOPIC, NodeProcess, Probe, make_image, sample_rgb

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NODE = "/ivlm"
STARTUP_S = 90.0
RESULT_S = 30.0


def _synthetic_smplx_size(ros_node_params: dict) -> tuple[int, int]:
    import smplx  # noqa: F401  (the body model file format is smplx's)

    with np.load(Path(ros_node_params["body_model_dir"]) / "smplx" / "SMPLX_NEUTRAL.npz") as data:
        return len(data["v_template"]), len(data["f"])


def _result(probe: Probe, key: str, sec: int, nanosec: int = 0):
    return probe.wait_for(
        lambda: probe.by_stamp(key, sec, nanosec), RESULT_S, f"{key} for stamp {sec}.{nanosec}"
    )[-1]


def _with_contact(probe: Probe, key: str, sec: int, nanosec: int = 0):
    """The frame's estimate (or markers) once it carries that frame's own contact: the body loop publishes
    every frame at once and again when the contact loop finishes it (stamps never go back)."""

    def painted() -> list:
        return [
            m for m in probe.by_stamp("estimate", sec, nanosec)
            if (m.contact_stamp.sec, m.contact_stamp.nanosec) == (sec, nanosec)
        ]

    estimate = probe.wait_for(painted, RESULT_S, f"the estimate of {sec}.{nanosec} with its own contact")[-1]
    if key == "estimate":
        return estimate
    # Markers go out right after each estimate: the last ones of the frame are the painted ones.
    count = len(probe.by_stamp("estimate", sec, nanosec))
    return probe.wait_for(
        lambda: len(probe.by_stamp(key, sec, nanosec)) >= count and probe.by_stamp(key, sec, nanosec),
        RESULT_S, f"{key} of {sec}.{nanosec} with its contact",
    )[-1]


def test_diagnostics_report_the_loaded_model(probe: Probe) -> None:
    status = probe.wait_status(lambda s: s["model_loaded"] == "true", 10, "model_loaded")
    assert status["_level"] == 0, status
    assert status["device"] == "cpu" and status["model_id"] == "Gen" and status["dtype"] == "float32"
    assert status["decoder_kernels"].startswith("eager steps; layer glue eager; CPU products"), status
    for key in ("frames_dropped", "latency_ms_last", "queue_age_ms", "frames_failed"):
        assert key in status


@pytest.mark.parametrize(("encoding", "pad", "sec"), [("rgb8", 0, 101), ("bgr8", 5, 102), ("mono8", 3, 103)])
def test_frame_in_contacts_out_with_the_source_stamp(
    probe: Probe, ros_node_params: dict, encoding: str, pad: int, sec: int
) -> None:
    rgb = sample_rgb(128)
    probe.publish_frame(rgb, sec, 250, encoding=encoding, pad=pad)
    human = _result(probe, "human", sec, 250)
    num_vertices, num_faces = _synthetic_smplx_size(ros_node_params)
    assert human.header.frame_id == FRAME_ID
    assert human.object_query == "scene" and human.model_id == "Gen"
    assert human.contact_found and "hands" in human.body_parts
    assert human.body_model == "smplx"  # the synthetic body dir ships smpl_to_smplx.pkl
    contact = np.asarray(human.vertex_contact)
    assert contact.shape == (num_vertices,) and np.all((contact >= 0) & (contact <= 1))
    assert human.contact_threshold == pytest.approx(0.5)
    np.testing.assert_array_equal(np.asarray(human.contact_vertex_ids), np.flatnonzero(contact >= 0.5))

    estimate = _with_contact(probe, "estimate", sec, 250)
    assert estimate.header.frame_id == FRAME_ID and not estimate.has_object_contact
    assert estimate.track_id == -1 and human.track_id == -1  # fit_human off: nobody tracked
    np.testing.assert_array_equal(np.asarray(estimate.human.vertex_contact), contact)
    assert not estimate.human_placed and len(estimate.human_mesh.vertices) == 0

    markers = {m.ns: m for m in _with_contact(probe, "markers", sec, 250).markers}
    mesh = markers["human_mesh"]
    assert mesh.type == 11 and mesh.header.frame_id == FRAME_ID
    assert len(mesh.points) == len(mesh.colors) == 3 * num_faces
    colours = np.array([[c.r, c.g, c.b] for c in mesh.colors[::97]])
    assert len(np.unique(colours.round(3), axis=0)) > 1  # coloured by contact, not one flat colour
    spheres = markers["human_contact"]
    if len(human.contact_vertex_ids):
        assert spheres.type == 7 and 0 < len(spheres.points) <= len(human.contact_vertex_ids)
    else:
        assert spheres.action == 2

    debug = _result(probe, "debug", sec, 250)
    assert debug.encoding == "rgb8" and debug.width == 128 and debug.height == 128 + 128 // 4
    assert debug.header.frame_id == FRAME_ID
    probe.received[f"contact_{encoding}"].append(contact)


def test_same_pixels_in_rgb8_and_bgr8_give_the_same_contacts(probe: Probe) -> None:
    rgb_runs, bgr_runs = probe.received.get("contact_rgb8"), probe.received.get("contact_bgr8")
    if not rgb_runs or not bgr_runs:
        pytest.skip("needs the rgb8 and bgr8 frame tests of this module")
    np.testing.assert_allclose(rgb_runs[-1], bgr_runs[-1], atol=1e-6)


def test_object_query_topic_changes_the_question(probe: Probe) -> None:
    from std_msgs.msg import String

    probe.query_pub.publish(String(data="bench"))
    probe.wait_status(lambda s: s["object_query"] == "bench", 10, "the query to reach the node")
    probe.publish_frame(sample_rgb(96), 110)
    assert _result(probe, "human", 110).object_query == "bench"
    probe.query_pub.publish(String(data="scene"))
    probe.wait_status(lambda s: s["object_query"] == "scene", 10, "the query to go back to 'scene'")


def test_interaction_task_publishes_object_contact_and_both_meshes(
    probe: Probe, ros_object_library: dict
) -> None:
    from std_msgs.msg import String

    assert probe.set_parameter(NODE, "task", "interaction").successful
    try:
        probe.query_pub.publish(String(data=ros_object_library["label"]))
        probe.wait_status(
            lambda s: s["object_query"] == "bench" and s["task"] == "interaction", 10, "task+query"
        )
        probe.publish_frame(sample_rgb(96), 130)
        obj = _result(probe, "object", 130)
        assert obj.header.frame_id == FRAME_ID and obj.object_label == "bench" and obj.model_id == "Gen"
        assert obj.mesh_resource == f"file://{ros_object_library['mesh']}"
        contact = np.asarray(obj.vertex_contact)
        assert obj.contact_found and contact.shape == (ros_object_library["num_vertices"],)
        np.testing.assert_array_equal(np.asarray(obj.contact_vertex_ids), np.flatnonzero(contact >= 0.5))
        assert len(obj.contact_points) == 0  # not fitted: no camera-frame points
        estimate = _with_contact(probe, "estimate", 130)
        assert estimate.has_object_contact and estimate.object.object_label == "bench"
        assert len(estimate.human.vertex_contact) > 0 and not estimate.object_placed
        markers = {m.ns: m for m in _with_contact(probe, "markers", 130).markers}
        assert len(markers["object_mesh"].points) == 3 * ros_object_library["num_faces"]
        assert {"human_mesh", "human_contact", "object_contact"} <= set(markers)
        debug = _result(probe, "debug", 130)
        assert debug.height == 96 + 2 * (96 // 4)  # photo + a human and an object view strip

        before = int(probe.fresh_status()["frames_failed"])
        probe.query_pub.publish(
            String(data="unicorn")
        )  # not in the library: the frame fails, the node goes on
        probe.wait_status(lambda s: s["object_query"] == "unicorn", 10, "the unknown query")
        probe.publish_frame(sample_rgb(96), 131)
        status = probe.wait_status(lambda s: int(s["frames_failed"]) > before, RESULT_S, "the failed frame")
        assert "unicorn" in status["last_error"]
    finally:
        assert probe.set_parameter(NODE, "task", "human_contact").successful
        probe.query_pub.publish(String(data="scene"))
        probe.wait_status(lambda s: s["object_query"] == "scene", 10, "the query to go back to 'scene'")


def test_object_box_and_mask_topics_are_held_until_the_query_changes(probe: Probe) -> None:
    from sensor_msgs.msg import RegionOfInterest
    from std_msgs.msg import String

    box_pub = probe.node.create_publisher(RegionOfInterest, f"{NODE}/object_box", 10)
    mask_pub = probe.node.create_publisher(type(make_image(sample_rgb(8), 0)), f"{NODE}/object_mask", 10)
    probe.wait_matched(box_pub, 10)
    probe.wait_matched(mask_pub, 10)
    box_pub.publish(RegionOfInterest(x_offset=10, y_offset=20, width=30, height=40))
    probe.wait_status(lambda s: s["object_region"] == "box", 10, "the box to be held")
    mask = make_image(sample_rgb(32), 0, encoding="mono8")
    mask_pub.publish(mask)
    probe.wait_status(lambda s: s["object_region"] == "mask", 10, "the mask to be held")
    probe.query_pub.publish(String(data="cup"))  # another object: the old outline no longer applies
    probe.wait_status(lambda s: s["object_query"] == "cup" and s["object_region"] == "none", 10, "a reset")
    assert not probe.set_parameter(NODE, "object_box", "30,40,10,50").successful  # x1 < x0
    assert probe.set_parameter(NODE, "object_box", "10,20,40,60").successful  # a fixed box when topics are silent
    probe.wait_status(lambda s: s["object_region"] == "box parameter", 10, "the box parameter")
    assert probe.set_parameter(NODE, "object_box", "").successful
    probe.query_pub.publish(String(data="scene"))
    probe.wait_status(lambda s: s["object_query"] == "scene", 10, "the query to go back to 'scene'")


def test_bad_frames_are_counted_and_never_stop_the_node(probe: Probe, node: NodeProcess) -> None:
    before = int(probe.fresh_status()["frames_failed"])
    probe.publish_frame(sample_rgb(64), 120, encoding="16UC1")  # a depth image on the colour topic
    truncated = make_image(sample_rgb(64), 121)
    truncated.data = bytes(truncated.data)[:100]
    probe.image_pub.publish(truncated)
    status = probe.wait_status(lambda s: int(s["frames_failed"]) >= before + 2, RESULT_S, "2 failed frames")
    assert "16UC1" in status["last_error"] or "bytes" in status["last_error"]
    probe.publish_frame(sample_rgb(64), 122)
    assert _result(probe, "human", 122).header.frame_id == FRAME_ID
    assert node.alive()


def test_only_the_newest_frame_is_processed_and_drops_are_counted(probe: Probe) -> None:
    """Both loops take the newest frame: the body loop counts what it skipped in frames_dropped, the contact
    loop (the VLM, far slower) in contact_frames_skipped; every frame is accounted for in each.

    The contact loop is held to 1 Hz here: on a quiet machine the tiny model keeps up with a burst of small
    frames, and which loop then skips depends on timing. With the slot closed for a second, the frames the
    body loop passes on pile up in the contact loop's slot, so at least one loop must skip a stale frame."""
    assert probe.set_parameter(NODE, "max_rate_hz", 1.0).successful
    try:
        start = probe.fresh_status()
        stamps = list(range(200, 208))
        rgb = sample_rgb(96)
        for sec in stamps:  # back to back, far faster than the contact loop's slots
            probe.publish_frame(rgb, sec)
        _result(probe, "human", stamps[-1])  # the newest frame is always processed

        def delta(status: dict, key: str) -> int:
            return int(status[key]) - int(start[key])

        status = probe.wait_status(
            lambda s: delta(s, "frames_received") > 0
            and delta(s, "frames_processed") + delta(s, "frames_dropped") == delta(s, "frames_received")
            and delta(s, "contact_frames_processed") + delta(s, "contact_frames_skipped")
            == delta(s, "frames_processed"),
            10,
            "every received frame to be processed or counted as dropped, by both loops",
        )
        processed = delta(status, "frames_processed")
        contact_processed, skipped = delta(status, "contact_frames_processed"), delta(status, "contact_frames_skipped")
        assert skipped + delta(status, "frames_dropped") >= 1, status
        assert contact_processed < len(stamps), status

        def results(key: str) -> list[int]:
            return [m.header.stamp.sec for m in probe.received[key] if m.header.stamp.sec in stamps]

        probe.wait_for(lambda: len(results("human")) >= contact_processed, 10, "one contact per contact-loop frame")
        probe.wait_for(lambda: len(set(results("estimate"))) >= processed, 10, "an estimate per body-loop frame")
        probe.spin(0.3)
        got = results("human")
        assert got == sorted(got) and len(got) == contact_processed  # in order, one per frame the VLM saw
        bodies = results("estimate")
        assert bodies == sorted(bodies) and len(set(bodies)) == processed  # never back in time
        assert float(status["queue_age_ms"]) >= 0.0
    finally:
        assert probe.set_parameter(NODE, "max_rate_hz", 0.0).successful


def test_rate_limit_skips_frames_between_allowed_slots(probe: Probe) -> None:
    """max_rate_hz limits the contact loop (the VLM); bodies still go out for every frame."""
    assert probe.set_parameter(NODE, "max_rate_hz", 1.0).successful
    try:
        probe.publish_frame(sample_rgb(64), 250)  # takes the first slot
        _result(probe, "human", 250)
        start = probe.fresh_status()
        stamps = list(range(251, 259))
        began = time.monotonic()
        for sec in stamps:  # 8 frames in ~0.8 s (more on a loaded machine): a slot opens every 1 s
            probe.publish_frame(sample_rgb(64), sec)
            probe.spin(0.1)
        slots = int(time.monotonic() - began) + 2  # the slots that can open while they are sent, + the last
        _result(probe, "human", stamps[-1])  # the newest frame is processed when the next slot opens
        got = [m.header.stamp.sec for m in probe.received["human"] if m.header.stamp.sec in stamps]
        assert len(got) <= slots and got[-1] == stamps[-1]
        status = probe.fresh_status()
        assert int(status["contact_frames_skipped"]) - int(start["contact_frames_skipped"]) >= len(stamps) - slots

        def bodies() -> set[int]:
            return {m.header.stamp.sec for m in probe.received["estimate"] if m.header.stamp.sec in stamps}

        def dropped(s: dict) -> int:
            return int(s["frames_dropped"]) - int(start["frames_dropped"])

        # Every frame has its body estimate or was dropped by the body loop (the probe may lag behind: wait).
        status = probe.wait_status(lambda s: len(bodies()) + dropped(s) == len(stamps), RESULT_S, "every body")
        assert len(bodies()) > len(got)
    finally:
        assert probe.set_parameter(NODE, "max_rate_hz", 0.0).successful


def test_one_shot_service(probe: Probe) -> None:
    from ivlm_msgs.srv import EstimateInteraction
    from sensor_msgs.msg import CameraInfo

    request = EstimateInteraction.Request(image=make_image(sample_rgb(80), 300, 7), camera_info=CameraInfo())
    request.object_query = "tennis_racket"
    response = probe.call(EstimateInteraction, f"{NODE}/estimate_interaction", request)
    assert response.success, response.message
    assert response.estimate.header.stamp.sec == 300 and response.estimate.header.stamp.nanosec == 7
    assert response.estimate.human.object_query == "tennis_racket"
    assert len(response.estimate.human.vertex_contact) > 0

    request.task = "juggling"
    response = probe.call(EstimateInteraction, f"{NODE}/estimate_interaction", request)
    assert not response.success and "task" in response.message

    bad = EstimateInteraction.Request(image=make_image(sample_rgb(80), 301, encoding="16UC1"))
    response = probe.call(EstimateInteraction, f"{NODE}/estimate_interaction", bad)
    assert not response.success and "16UC1" in response.message


def test_invalid_parameters_are_rejected_with_a_reason(probe: Probe) -> None:
    result = probe.set_parameter(NODE, "human_threshold", 1.5)
    assert not result.successful and "human_threshold" in result.reason and "(0.0, 1.0)" in result.reason
    result = probe.set_parameter(NODE, "marker_colormap", "jet")
    assert not result.successful and "viridis" in result.reason
    result = probe.set_parameter(NODE, "checkpoint_dir", "/elsewhere")
    assert not result.successful and "configure" in result.reason
    result = probe.set_parameter(NODE, "image_topic", "/bad topic")
    assert not result.successful

    assert probe.set_parameter(NODE, "human_threshold", 0.25).successful
    try:
        probe.publish_frame(sample_rgb(64), 400)
        human = _result(probe, "human", 400)
        assert human.contact_threshold == pytest.approx(0.25)
        contact = np.asarray(human.vertex_contact)
        np.testing.assert_array_equal(np.asarray(human.contact_vertex_ids), np.flatnonzero(contact >= 0.25))
    finally:
        assert probe.set_parameter(NODE, "human_threshold", 0.5).successful


def test_deactivate_stops_processing_and_activate_resumes(probe: Probe) -> None:
    assert probe.change_state(NODE, "deactivate")
    probe.wait_status(lambda s: s["lifecycle_state"] == "inactive", 10, "inactive")
    probe.publish_frame(sample_rgb(64), 500)
    probe.wait_status(lambda s: int(s["frames_ignored_inactive"]) >= 1, 10, "the frame to be ignored")
    probe.spin(0.5)
    assert not probe.by_stamp("human", 500)
    assert probe.change_state(NODE, "activate")
    probe.wait_status(lambda s: s["lifecycle_state"] == "active", 10, "active again")
    probe.publish_frame(sample_rgb(64), 501)
    assert _result(probe, "human", 501).header.frame_id == FRAME_ID


def test_cleanup_and_configure_cycles_while_frames_flow(probe: Probe) -> None:
    """Each cleanup really destroys the camera subscriptions and the output publishers (on the node's spin
    thread, ivlm_ros.deferred_teardown), frames sent meanwhile are ignored, and after the cycles the node
    works and has never met rclpy's InvalidHandle race."""
    assert probe.change_state(NODE, "deactivate")
    for cycle in range(4):
        assert probe.change_state(NODE, "cleanup")
        probe.publish_frame(sample_rgb(64), 600 + cycle)
        probe.wait_for(
            lambda: probe.node.count_publishers(f"{NODE}/human_contact") == 0
            and probe.node.count_subscribers(IMAGE_TOPIC) == 0,
            10, "the cleanup to destroy the node's publishers and camera subscriptions",
        )
        assert probe.change_state(NODE, "configure")
        probe.wait_for(lambda: probe.node.count_publishers(f"{NODE}/human_contact") == 1, 10, "publishers again")
    assert probe.change_state(NODE, "activate")
    probe.wait_matched(probe.image_pub)
    probe.publish_frame(sample_rgb(64), 610)
    assert _result(probe, "human", 610).header.frame_id == FRAME_ID
    status = probe.wait_status(lambda s: s["lifecycle_state"] == "active", 10, "active")
    assert int(status["executor_races"]) == 0
    assert not probe.by_stamp("human", 600)
