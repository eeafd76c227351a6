"""The real node with an external SMPL-X body (~/body_params) and object fitting: the body it publishes is the
given one, and the fitted object pose comes out as a PoseStamped on ~/object_pose.

One node process (interaction task, fit_object on, fit_human off: the only body is the external one, plus the
optional 2D contact model); the object is outlined with a mask on ~/object_mask, so the fit does not depend on
the tiny random SAM.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ivlm_ros.testing.node_harness import FRAME_ID, NodeProcess, Probe, make_image, sample_rgb

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NODE = "/ivlm"
SIZE = 96
RESULT_S = 60.0


@pytest.fixture(scope="module")
def node(ros_context, ros_node_params, ros_object_library, tmp_path_factory) -> Iterator[NodeProcess]:
    log = Path(tmp_path_factory.mktemp("ivlm_external_body_node")) / "node.log"
    params = {
        **ros_node_params,
        "task": "interaction",
        "object_query": ros_object_library["label"],
        "fit_object": True,
        "publish_debug_image": False,
        "require_camera_info": True,
        "contact_2d_checkpoint_dir": ros_node_params["checkpoint_dir"],  # also the 2D contact mask
    }
    proc = NodeProcess(params, log)
    yield proc
    assert proc.stop() == 0, proc.log()[-3000:]


@pytest.fixture(scope="module")
def probe(node: NodeProcess) -> Iterator[Probe]:
    from geometry_msgs.msg import PoseStamped
    from ivlm_msgs.msg import SmplxParams
    from sensor_msgs.msg import Image

    p = Probe()
    p.wait_active(node, 90)
    p.node.create_subscription(PoseStamped, f"{NODE}/object_pose", p.received["object_pose"].append, 10)
    p.node.create_subscription(Image, f"{NODE}/contact_mask", p.received["contact_mask"].append, 10)
    p.body_pub = p.node.create_publisher(SmplxParams, f"{NODE}/body_params", 10)
    p.mask_pub = p.node.create_publisher(Image, f"{NODE}/object_mask", 10)
    for publisher in (p.image_pub, p.info_pub, p.body_pub, p.mask_pub):
        p.wait_matched(publisher)
    mask = np.zeros((SIZE, SIZE, 3), np.uint8)
    mask[40:64, 36:60] = 255  # the object's pixels
    p.mask_pub.publish(make_image(mask, 0, encoding="mono8"))
    p.wait_status(lambda s: s["object_region"] == "mask", 10, "the object mask to be held")
    yield p
    p.destroy()


def _body_params() -> dict[str, np.ndarray]:
    """An upright SMPL-X body 2.5 m in front of the camera (OpenCV optical frame: y down, z forward)."""
    rng = np.random.default_rng(5)
    return {
        "betas": rng.normal(0.0, 0.5, 10).astype(np.float32),
        "global_orient": np.array([np.pi, 0.0, 0.0], np.float32),
        "body_pose": rng.normal(0.0, 0.15, 63).astype(np.float32),
        "left_hand_pose": rng.normal(0.0, 0.1, 45).astype(np.float32),
        "right_hand_pose": rng.normal(0.0, 0.1, 45).astype(np.float32),
        "jaw_pose": np.array([0.1, 0.0, 0.0], np.float32),
        "expression": rng.normal(0.0, 0.3, 10).astype(np.float32),
        "transl": np.array([0.05, -0.1, 2.5], np.float32),
    }


def _publish_body(probe: Probe, params: dict[str, np.ndarray], sec: int, frame_id: str = FRAME_ID) -> None:
    from ivlm_msgs.msg import SmplxParams

    msg = SmplxParams(gender="neutral")
    msg.header.stamp.sec, msg.header.frame_id = sec, frame_id
    for name, value in params.items():
        setattr(msg, name, value.tolist())
    before = int(probe.fresh_status()["body_params_received"])
    probe.body_pub.publish(msg)
    probe.wait_status(lambda s: int(s["body_params_received"]) > before, 10, "the body params to arrive")


def _result(probe: Probe, key: str, sec: int):
    return probe.wait_for(lambda: probe.by_stamp(key, sec), RESULT_S, f"{key} for stamp {sec}")[-1]


def test_external_body_is_placed_and_the_object_pose_is_published(probe: Probe, ros_node_params: dict) -> None:
    from ivlm_core.body.models import load_body_model, posed_mesh

    params = _body_params()
    _publish_body(probe, params, 600)
    probe.publish_frame(sample_rgb(SIZE), 600)
    estimate = _result(probe, "estimate", 600)
    assert estimate.human_placed, estimate.human_placement_status
    assert "external SMPL-X" in estimate.human_placement_status
    model = load_body_model(ros_node_params["body_model_dir"], "smplx")
    expected = posed_mesh(model, **params).vertices[0].detach().numpy()
    vertices = np.array([[p.x, p.y, p.z] for p in estimate.human_mesh.vertices])
    np.testing.assert_allclose(vertices, expected, atol=1e-4)
    np.testing.assert_allclose(np.asarray(estimate.human_params.body_pose), params["body_pose"], atol=1e-6)
    assert estimate.human_params.header.frame_id == FRAME_ID
    markers = {m.ns: m for m in _result(probe, "markers", 600).markers}
    first_triangle = np.array([[p.x, p.y, p.z] for p in markers["human_mesh"].points[:3]])
    faces = np.array([t.vertex_indices for t in estimate.human_mesh.triangles])
    np.testing.assert_allclose(first_triangle, expected[faces[0]], atol=1e-4)  # markers show that body

    # The object is fitted off the camera-rate path (when the contact arrives); the frame is then republished.
    estimate = probe.wait_for(
        lambda: [m for m in probe.by_stamp("estimate", 600) if m.object_placed], RESULT_S, "the fitted object"
    )[-1]
    assert estimate.object_placed, estimate.fit_report.message
    assert (estimate.contact_stamp.sec, estimate.contact_stamp.nanosec) == (600, 0)
    pose = _result(probe, "object_pose", 600)
    assert pose.header.frame_id == FRAME_ID and pose.header.stamp.nanosec == 0
    q = pose.pose.orientation
    assert abs(q.x**2 + q.y**2 + q.z**2 + q.w**2 - 1.0) < 1e-6
    assert pose.pose == estimate.object_pose and pose.pose.position.z > 0
    assert len(probe.by_stamp("object_pose", 600)) == 1
    contact_mask = _result(probe, "contact_mask", 600)  # the 2D model's mask on the photo, same stamp/frame
    assert (contact_mask.encoding, contact_mask.height, contact_mask.width) == ("mono8", SIZE, SIZE)
    assert contact_mask.header.frame_id == FRAME_ID and set(bytes(contact_mask.data)) <= {0, 255}
    status = probe.fresh_status()
    assert int(status["body_params_used"]) >= 1 and status["body_params_rejected"] == "0"


def test_the_object_is_refitted_when_the_body_moves(probe: Probe) -> None:
    """Off the body loop's path, the object is refitted when the person moved more than object_refit_motion_m."""
    start = int(probe.fresh_status()["object_refits_on_motion"])
    params = _body_params()
    _publish_body(probe, params, 620)
    probe.publish_frame(sample_rgb(SIZE), 620)
    _result(probe, "object_pose", 620)  # fitted when the frame's contact arrived
    moved = {**params, "transl": params["transl"] + np.array([0.3, 0.0, 0.0], np.float32)}
    _publish_body(probe, moved, 621)
    probe.publish_frame(sample_rgb(SIZE), 621)
    probe.wait_status(lambda s: int(s["object_refits_on_motion"]) > start, RESULT_S, "a refit after the move")
    pose = _result(probe, "object_pose", 621)
    assert pose.pose.position.x > _result(probe, "object_pose", 620).pose.position.x  # followed the body


def test_body_params_in_another_frame_or_stale_are_ignored(probe: Probe) -> None:
    start = probe.fresh_status()
    _publish_body(probe, _body_params(), 610, frame_id="base_link")
    probe.publish_frame(sample_rgb(SIZE), 610)
    estimate = _result(probe, "estimate", 610)
    assert not estimate.human_placed and len(estimate.human_mesh.vertices) == 0
    assert not estimate.object_placed  # no body to fit the object to: no pose is published
    status = probe.wait_status(
        lambda s: int(s["body_params_rejected"]) > int(start["body_params_rejected"]), 10, "the rejection"
    )
    assert status["body_params_used"] == start["body_params_used"]

    assert probe.set_parameter(NODE, "body_params_timeout_s", 0.3).successful
    try:
        _publish_body(probe, _body_params(), 611)
        probe.spin(0.6)  # older than the timeout by the time the frame comes
        probe.publish_frame(sample_rgb(SIZE), 611)
        assert not _result(probe, "estimate", 611).human_placed
    finally:
        assert probe.set_parameter(NODE, "body_params_timeout_s", 1.0).successful
    probe.spin(0.3)
    assert not probe.by_stamp("object_pose", 610) and not probe.by_stamp("object_pose", 611)
    assert probe.fresh_status()["body_params_used"] == start["body_params_used"]
    assert probe.set_parameter(NODE, "body_params_slop_s", -0.1).successful is False


def test_a_frame_waits_for_lagging_body_params_while_they_flow(probe: Probe) -> None:
    from sensor_msgs.msg import Image

    probe.mask_pub.publish(Image())  # no object outline: this test is about the body only (no object fit)
    probe.wait_status(lambda s: s["object_region"] == "none", 10, "the mask to be cleared")
    assert probe.set_parameter(NODE, "body_params_wait_s", 3.0).successful
    try:
        params = _body_params()
        # stamps of their own: the refit test's 620/621 bodies and frames must not be paired with these
        received = int(probe.fresh_status()["body_params_received"])
        _publish_body(probe, params, 630)  # params are flowing ...
        # ... once the node has them: a frame that overtakes the first params finds none flowing, and does not wait
        probe.wait_status(lambda s: int(s["body_params_received"]) > received, 10, "the flowing params to arrive")
        probe.publish_frame(sample_rgb(SIZE), 631)
        probe.spin(0.4)  # the regressor's result for frame 631 comes after the frame
        _publish_body(probe, params, 631)
        estimate = _result(probe, "estimate", 631)
        assert estimate.human_placed, estimate.human_placement_status
        assert "external SMPL-X" in estimate.human_placement_status
    finally:
        assert probe.set_parameter(NODE, "body_params_wait_s", 0.0).successful


def test_one_shot_service_places_a_given_body(probe: Probe, ros_node_params: dict) -> None:
    from ivlm_msgs.msg import SmplxParams
    from ivlm_msgs.srv import EstimateInteraction

    from ivlm_core.body.models import load_body_model, posed_mesh

    params = _body_params()
    body = SmplxParams(gender="neutral")
    body.header.frame_id = FRAME_ID
    for name, value in params.items():
        setattr(body, name, value.tolist())
    request = EstimateInteraction.Request(
        image=make_image(sample_rgb(SIZE), 700), use_body_params=True, body_params=body, task="human_contact"
    )
    response = probe.call(EstimateInteraction, f"{NODE}/estimate_interaction", request, timeout_s=RESULT_S)
    assert response.success, response.message
    estimate = response.estimate
    assert estimate.human_placed and "external SMPL-X" in estimate.human_placement_status
    expected = posed_mesh(load_body_model(ros_node_params["body_model_dir"], "smplx"), **params).vertices[0]
    vertices = np.array([[p.x, p.y, p.z] for p in estimate.human_mesh.vertices])
    np.testing.assert_allclose(vertices, expected.detach().numpy(), atol=1e-4)

    body.header.frame_id = "base_link"  # not the camera frame: refused with the reason, the node goes on
    response = probe.call(EstimateInteraction, f"{NODE}/estimate_interaction", request, timeout_s=RESULT_S)
    assert not response.success and "base_link" in response.message
