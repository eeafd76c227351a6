"""The real node under hostile or careless input (issue 10, items 2, 3, 5-10), with the tiny random model.

One node process for the module; the tests run in file order (the first one needs a fresh failure window).
"""

from __future__ import annotations

import numpy as np
import pytest

from ivlm_ros.testing.node_harness import FRAME_ID, IMAGE_TOPIC, NodeProcess, Probe, make_image, sample_rgb

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NODE = "/ivlm"
RESULT_S = 60.0


def _info(width: int, height: int, sec: int, k: list[float] | None = None):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(height=height, width=width, distortion_model="plumb_bob")
    info.header.stamp.sec, info.header.frame_id = sec, FRAME_ID
    info.k = k or [300.0, 0.0, width / 2.0, 0.0, 300.0, height / 2.0, 0.0, 0.0, 1.0]
    return info


def _count(probe: Probe, key: str) -> int:
    status = probe.fresh_status()
    return int(status[key])


def _wait_count(probe: Probe, key: str, at_least: int, what: str) -> dict[str, str]:
    return probe.wait_status(lambda s: int(s[key]) >= at_least, RESULT_S, what)


def test_diagnostics_go_error_when_every_frame_fails_and_warn_on_a_high_failure_rate(probe: Probe) -> None:
    status = probe.fresh_status()
    assert status["_level"] == 0 and status["recent_frames"] == "0", status
    failed = int(status["frames_failed"])
    for i in range(4):  # a depth stream on the colour topic: every frame fails at decode
        probe.image_pub.publish(make_image(sample_rgb(32), 900 + i, encoding="16UC1"))
        _wait_count(probe, "frames_failed", failed + i + 1, f"failed frame {i + 1}")
    status = probe.wait_status(lambda s: s["_level"] == 2, 10, "ERROR when every recent frame fails")
    assert "every frame fails" in status["_message"] and "16UC1" in status["_message"], status
    processed = int(status["frames_processed"])
    for i in range(2):
        probe.publish_frame(sample_rgb(64), 910 + i)
        _wait_count(probe, "frames_processed", processed + i + 1, f"good frame {i + 1}")
    status = probe.wait_status(lambda s: s["recent_frames"] == "6", 10, "six recent frames")
    assert status["_level"] == 1 and "4 of the last 6 frames failed" in status["_message"], status
    assert "16UC1" in status["_message"]


def test_query_topic_refuses_special_tokens_and_control_characters_and_logs_them_escaped(
    probe: Probe, node: NodeProcess
) -> None:
    from std_msgs.msg import String

    for hostile in ("<image>", "mug [SEG]", "mug\x1b[31m\r[ERROR] forged line"):
        probe.query_pub.publish(String(data=hostile))
    probe.wait_for(lambda: node.log().count("ignored object query") >= 3, 20, "three refused queries")
    log = node.log()
    assert "\x1b" not in log and "\r" not in log
    assert "\\x1b[31m\\r[ERROR] forged line" in log and "special tokens (<image>)" in log
    assert probe.fresh_status()["object_query"] == "scene"


def test_service_validates_the_query_with_the_same_rules(probe: Probe) -> None:
    from ivlm_msgs.srv import EstimateInteraction

    image = make_image(sample_rgb(64), 1)
    for query, reason in (("a" * 200_000, "at most 100 characters; got 200000"), ("<image>", "special tokens"),
                          ("cup\x1b[2J", "U+001B")):
        response = EstimateInteraction.Request(image=image, object_query=query)
        response = probe.call(EstimateInteraction, f"{NODE}/estimate_interaction", response)
        assert not response.success and reason in response.message, response.message
        assert "\x1b" not in response.message and len(response.message) < 2000


def test_fifty_concurrent_service_calls_are_all_answered(probe: Probe) -> None:
    from ivlm_msgs.srv import EstimateInteraction
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    # The client's response history must hold 50 answers too (the default depth 10 drops them client-side).
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    client = probe.node.create_client(EstimateInteraction, f"{NODE}/estimate_interaction", qos_profile=qos)
    try:
        probe.wait_for(client.service_is_ready, 30, "the service")
        request = EstimateInteraction.Request(image=make_image(sample_rgb(64), 5), object_query="scene")
        futures = [client.call_async(request) for _ in range(50)]
        probe.wait_for(lambda: all(f.done() for f in futures), 180, "answers to all 50 calls")
    finally:
        probe.node.destroy_client(client)
    responses = [f.result() for f in futures]
    ok = [r for r in responses if r.success]
    busy = [r for r in responses if not r.success]
    assert ok, [r.message for r in responses][:5]
    assert all(r.message.startswith("busy: ") and "requests queued" in r.message for r in busy), busy[:1]
    assert len(ok) + len(busy) == 50
    status = probe.fresh_status()
    assert int(status["service_busy"]) == len(busy) and status["service_queued"] == "0"


def test_unusable_camera_intrinsics_give_contacts_without_placement(probe: Probe, node: NodeProcess) -> None:
    status = probe.fresh_status()
    failed, invalid = int(status["frames_failed"]), int(status["camera_info_invalid"])
    bad_ks = {
        920: [float("nan"), 0.0, 32.0, 0.0, 300.0, 32.0, 0.0, 0.0, 1.0],
        921: [300.0, 0.0, 32.0, 0.0, 300.0, 32.0, 0.0, 0.0, 0.0],  # K[2][2] = 0: LinAlgError before
        922: [1e300, 0.0, 32.0, 0.0, 1e300, 32.0, 0.0, 0.0, 1.0],  # "zero norm quaternions" before
    }
    for sec, k in bad_ks.items():
        probe.image_pub.publish(make_image(sample_rgb(64), sec))
        probe.info_pub.publish(_info(64, 64, sec, k))
        probe.wait_for(lambda sec=sec: probe.by_stamp("human", sec), RESULT_S, f"contacts for frame {sec}")
    status = _wait_count(probe, "camera_info_invalid", invalid + 3, "three invalid camera_info")
    assert int(status["frames_failed"]) == failed
    assert "invalid camera_info" in status["last_camera_info_problem"]
    estimate = probe.wait_for(lambda: probe.by_stamp("estimate", 922), RESULT_S, "estimate")[-1]
    assert not estimate.human_placed
    # a CameraInfo of another resolution is warned about
    probe.image_pub.publish(make_image(sample_rgb(64), 925))
    probe.info_pub.publish(_info(640, 480, 925))
    _wait_count(probe, "camera_info_size_mismatch", 1, "a size mismatch")
    assert "CameraInfo is 640x480 but the image is 64x64" in node.log()


def test_images_above_max_image_pixels_are_dropped_with_the_reason(probe: Probe) -> None:
    status = probe.fresh_status()
    too_large = int(status["frames_too_large"])
    assert probe.set_parameter(NODE, "max_image_pixels", 64 * 64).successful
    try:
        probe.publish_frame(sample_rgb(96), 930)
        status = _wait_count(probe, "frames_too_large", too_large + 1, "a frame over max_image_pixels")
        assert "96x96" in status["last_error"] and "max_image_pixels" in status["last_error"]
        assert not probe.by_stamp("human", 930)
    finally:
        assert probe.set_parameter(NODE, "max_image_pixels", 16_000_000).successful


def test_empty_frame_id_is_warned_once_and_wrong_betas_are_rejected(probe: Probe, node: NodeProcess) -> None:
    from ivlm_msgs.msg import SmplxParams

    for sec in (940, 941):
        msg = make_image(sample_rgb(64), sec)
        msg.header.frame_id = ""
        probe.image_pub.publish(msg)
        probe.wait_for(lambda sec=sec: probe.by_stamp("human", sec), RESULT_S, f"contacts for frame {sec}")
    assert node.log().count("empty header.frame_id") == 1

    rejected = _count(probe, "body_params_rejected")
    pub = probe.node.create_publisher(SmplxParams, f"{NODE}/body_params", 10)
    probe.wait_matched(pub)
    params = SmplxParams(gender="neutral\x1b[31m")
    params.header.frame_id = FRAME_ID
    params.body_pose = [0.0] * 63
    params.betas = [0.1] * 16  # cut to 10 before: a different body, silently
    pub.publish(params)
    _wait_count(probe, "body_params_rejected", rejected + 1, "the 16-beta body to be rejected")
    assert "betas must have 10 values" in node.log()
    probe.node.destroy_publisher(pub)


def test_a_flood_is_fully_accounted_for(probe: Probe) -> None:
    """Every published frame is either seen by the callback or counted as lost before it (DDS history)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    publisher = probe.node.create_publisher(Image, IMAGE_TOPIC, QoSProfile(depth=200,
                                                                            reliability=ReliabilityPolicy.RELIABLE))
    try:
        probe.wait_matched(publisher)
        before = probe.fresh_status()
        received = int(before["frames_received"])
        lost = int(before["frames_lost_before_callback"])
        frame = make_image(np.tile(sample_rgb(160), (3, 4, 1)), 1000)  # 640x480: big enough to lose some
        publisher.publish(frame)  # anchors the sequence numbers of this publisher
        _wait_count(probe, "frames_received", received + 1, "the first frame")
        flood = 90
        for i in range(flood):  # 3 s at 30 Hz while the model is busy
            frame.header.stamp.sec = 1001 + i
            publisher.publish(frame)
            probe.spin(1 / 30)

        def settled(s: dict[str, str]) -> bool:
            seen = int(s["frames_received"]) - received
            return seen + int(s["frames_lost_before_callback"]) - lost == flood + 1

        status = probe.wait_status(settled, RESULT_S, "every flood frame seen or counted as lost")
    finally:
        probe.node.destroy_publisher(publisher)
    assert "frames_lost_dds_event" in status
    assert int(status["frames_received"]) > received + 1
    assert int(status["frames_processed"]) > 0
