"""Replay the recorded bag (test/data/ivlm_sample_bag, rosbag2 written with rosbags) into the real node.

The bag holds three sample photos as rgb8 and jpeg frames with camera_info, 1 s apart, and the object query
of each photo on /ivlm/object_query shortly before it. Asserts stamps, counts, frame ids and contents.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ivlm_ros.testing.node_harness import FRAME_ID, REPO, NodeProcess, Probe

pytestmark = [pytest.mark.ros, pytest.mark.slow]

BAG = REPO / "test" / "data" / "ivlm_sample_bag"
MANIFEST = json.loads((BAG / "frames.json").read_text())
NODE = "/ivlm"


@pytest.fixture(scope="module")
def node(ros_context, ros_node_params, tmp_path_factory) -> Iterator[NodeProcess]:
    log = Path(tmp_path_factory.mktemp("ivlm_bag_node")) / "node.log"
    proc = NodeProcess({**ros_node_params, "require_camera_info": True}, log)
    yield proc
    assert proc.stop() == 0, proc.log()[-3000:]


@pytest.fixture(scope="module")
def probe(node: NodeProcess) -> Iterator[Probe]:
    p = Probe()
    p.wait_active(node, 90)
    yield p
    p.destroy()


def _replay(probe: Probe, image_topic: str, rate: float = 1.0) -> list[tuple[int, int]]:
    from ivlm_ros.bag_replay import BagReplayer, read_bag

    topics = [image_topic, MANIFEST["topics"]["camera_info"], MANIFEST["topics"]["query"]]
    replayer = BagReplayer(probe.node, read_bag(BAG, topics))
    replayer.wait_for_subscribers(topics, timeout_s=30, spin=probe.spin)
    sent = []

    def frame_taken_before_next_query(msg) -> None:
        """A query (an untimed String) applies to the frames the node takes after it: before the next frame's
        query, wait until the node has taken the frame before it (its estimate is out). On a loaded machine the
        node's callbacks may otherwise take a query published 0.6 s after an image before that image."""
        images = sent.count(image_topic)
        if msg.topic == MANIFEST["topics"]["query"] and images:
            frame = MANIFEST["frames"][images - 1]
            probe.wait_for(lambda: probe.by_stamp("estimate", frame["stamp_sec"], frame["stamp_nanosec"]), 60,
                           f"frame {images}'s estimate before the next query")

    replayer.play(rate=rate, spin=probe.spin, on_publish=lambda m: sent.append(m.topic),
                  before_publish=frame_taken_before_next_query)
    assert sent.count(image_topic) == len(MANIFEST["frames"])
    return [(f["stamp_sec"], f["stamp_nanosec"]) for f in MANIFEST["frames"]]


def _check_outputs(probe: Probe, stamps: list[tuple[int, int]]) -> list:
    frames = MANIFEST["frames"]
    keys = ("human", "estimate", "markers", "debug")  # separate topics: they may arrive in any order

    def lacking(stamp: tuple[int, int]) -> list[str]:
        """What the frame still lacks of its outputs, its republished estimate (with its own contact) and that
        one's markers included: those two are large and may still be in flight on a loaded machine. Empty once
        the frame has settled; on a timeout it says whether outputs stalled or came late."""
        estimates = probe.by_stamp("estimate", *stamp)
        parts = [k for k in keys if not probe.by_stamp(k, *stamp)]
        if estimates and (estimates[-1].contact_stamp.sec, estimates[-1].contact_stamp.nanosec) != stamp:
            parts.append("estimate with its own contact")
        if len(probe.by_stamp("markers", *stamp)) != len(estimates):
            parts.append(f"markers {len(probe.by_stamp('markers', *stamp))} of {len(estimates)} estimates")
        return parts

    try:
        probe.wait_for(lambda: not any(lacking(s) for s in stamps), 120, "every output of every bag frame")
    except AssertionError as err:
        still = "; ".join(f"{s}: {', '.join(parts)}" for s in stamps if (parts := lacking(s)))
        raise AssertionError(f"{err}; still missing: {still}") from err
    probe.spin(0.5)  # anything duplicated would show up now
    humans = [m for m in probe.received["human"] if (m.header.stamp.sec, m.header.stamp.nanosec) in stamps]
    assert [(m.header.stamp.sec, m.header.stamp.nanosec) for m in humans] == stamps  # one each, in order
    for msg, frame in zip(humans, frames):
        assert msg.header.frame_id == MANIFEST["frame_id"] == "camera_color_optical_frame"
        assert msg.object_query == frame["object_query"]
        contact = np.asarray(msg.vertex_contact)
        assert contact.size > 0 and np.all((contact >= 0) & (contact <= 1))
        np.testing.assert_array_equal(np.asarray(msg.contact_vertex_ids), np.flatnonzero(contact >= 0.5))
    for stamp in stamps:
        assert len(probe.by_stamp("debug", *stamp)) == 1, stamp  # the contact loop's: once per frame it saw
        # The body loop publishes each frame at once, and again when that frame's contact arrives (1 s apart,
        # the VLM keeps up): the frame's last estimate carries its own contact, and stamps never go back.
        estimates = probe.by_stamp("estimate", *stamp)
        assert 1 <= len(estimates) <= 3 and len(probe.by_stamp("markers", *stamp)) == len(estimates), stamp
        last = estimates[-1]
        assert (last.contact_stamp.sec, last.contact_stamp.nanosec) == stamp
    received = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in probe.received["estimate"]]
    received = [s for s in received if s in stamps]
    assert received == sorted(received)
    for stamp, frame in zip(stamps, frames):
        debug = probe.by_stamp("debug", *stamp)[0]
        assert (debug.width, debug.height) == (frame["width"], frame["height"] + frame["width"] // 4)
        markers = probe.by_stamp("markers", *stamp)[-1].markers
        assert {m.header.frame_id for m in markers} == {MANIFEST["frame_id"]}
        # the canonical body ('human_mesh') or a tracked person's ('person_<id>/human_mesh')
        assert {m.ns.rsplit("/", 1)[-1] for m in markers} >= {"human_mesh", "human_contact"}
    return humans


def test_raw_bag_replay(probe: Probe) -> None:
    start = probe.fresh_status()
    stamps = _replay(probe, MANIFEST["topics"]["image"])
    _check_outputs(probe, stamps)
    status = probe.fresh_status()
    assert int(status["frames_received"]) - int(start["frames_received"]) == len(stamps)
    assert int(status["frames_processed"]) - int(start["frames_processed"]) == len(stamps)
    assert status["frames_dropped"] == start["frames_dropped"] and status["frames_unpaired_dropped"] == "0"


def test_compressed_bag_replay_after_reconfiguring(probe: Probe) -> None:
    assert probe.change_state(NODE, "deactivate") and probe.change_state(NODE, "cleanup")
    assert probe.set_parameter(NODE, "use_compressed", True).successful
    assert probe.change_state(NODE, "configure") and probe.change_state(NODE, "activate")
    probe.wait_status(lambda s: s["lifecycle_state"] == "active", 30, "active with compressed input")
    probe.received.clear()
    stamps = _replay(probe, MANIFEST["topics"]["compressed"])
    humans = _check_outputs(probe, stamps)
    assert {m.object_query for m in humans} == {f["object_query"] for f in MANIFEST["frames"]}


def _warm_up_body_fit(probe: Probe) -> None:
    """One service call first: the keypoint detector's start-up must not make the replay drop frames."""
    from ivlm_msgs.srv import EstimateInteraction
    from sensor_msgs.msg import CameraInfo

    from ivlm_ros.testing.node_harness import make_image, sample_rgb

    # Same size as the bag frames: the streaming keypoint tracker cannot change image size mid-stream.
    size = MANIFEST["frames"][0]["width"]
    rgb = sample_rgb(size)
    info = CameraInfo(width=size, height=size, k=[300.0, 0.0, size / 2, 0.0, 300.0, size / 2, 0.0, 0.0, 1.0])
    request = EstimateInteraction.Request(image=make_image(rgb, 1), camera_info=info, object_query="bench")
    response = probe.call(EstimateInteraction, f"{NODE}/estimate_interaction", request, timeout_s=120)
    assert response.success, response.message


def test_fitted_body_is_published_in_the_camera_frame(probe: Probe) -> None:
    assert probe.change_state(NODE, "deactivate") and probe.change_state(NODE, "cleanup")
    assert probe.set_parameter(NODE, "use_compressed", False).successful
    assert probe.set_parameter(NODE, "fit_human", True).successful
    assert probe.change_state(NODE, "configure") and probe.change_state(NODE, "activate")
    probe.wait_status(lambda s: s["lifecycle_state"] == "active", 30, "active with body fitting")
    _warm_up_body_fit(probe)
    probe.received.clear()
    stamps = _replay(probe, MANIFEST["topics"]["image"], rate=0.6)  # the keypoint fit is slower than 1 fps
    _check_outputs(probe, stamps)
    placed = 0
    for stamp in stamps:
        estimate = probe.by_stamp("estimate", *stamp)[-1]
        if not estimate.human_placed:
            assert estimate.human_placement_status  # says why
            continue
        placed += 1
        vertices = np.array([[p.x, p.y, p.z] for p in estimate.human_mesh.vertices])
        assert len(vertices) == len(estimate.human.vertex_contact) and len(estimate.human_mesh.triangles) > 0
        assert np.all(vertices[:, 2] > 0)  # in front of the camera (optical frame, z forward)
        assert (
            len(estimate.human_params.body_pose) == 63 and estimate.human_params.header.frame_id == FRAME_ID
        )
        assert estimate.track_id >= 1  # a tracked person
        markers = {m.ns: m for m in probe.by_stamp("markers", *stamp)[-1].markers}
        body = markers[f"person_{estimate.track_id}/human_mesh"]
        marker_points = np.array([[p.x, p.y, p.z] for p in body.points[:30]])
        assert np.isin(
            marker_points.round(5), vertices.round(5)
        ).all()  # the fitted mesh, not the display pose
        _check_body_tf(probe, stamp, estimate, vertices)
    assert placed >= 1, [probe.by_stamp("estimate", *s)[-1].human_placement_status for s in stamps]


def _check_body_tf(probe: Probe, stamp: tuple[int, int], estimate, vertices: np.ndarray) -> None:
    """/tf carries body_<track id> for the frame: child of the optical frame, at the pelvis, REP-155 axes."""
    from scipy.spatial.transform import Rotation

    from ivlm_ros.tf_frames import SMPLX_TO_REP155

    probe.wait_for(lambda: probe.by_stamp("tf", *stamp), 10, "the frame's /tf message")
    child = f"body_{estimate.track_id}"
    tf = [t for m in probe.by_stamp("tf", *stamp) for t in m.transforms if t.child_frame_id == child][-1]
    assert tf.header.frame_id == FRAME_ID
    t, q = tf.transform.translation, tf.transform.rotation
    pelvis = np.array([t.x, t.y, t.z])
    assert np.linalg.norm(pelvis - (vertices.min(0) + vertices.max(0)) / 2) < 0.5 * np.ptp(vertices, 0).max()
    root = Rotation.from_rotvec(np.asarray(estimate.human_params.global_orient, np.float64)).as_matrix()
    rotation = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    np.testing.assert_allclose(rotation, root @ SMPLX_TO_REP155, atol=1e-5)


def test_object_is_fitted_when_the_request_carries_its_box(probe: Probe, ros_object_library: dict) -> None:
    from ivlm_msgs.srv import EstimateInteraction
    from sensor_msgs.msg import CameraInfo, RegionOfInterest

    from ivlm_ros.testing.node_harness import make_image, sample_rgb

    assert probe.change_state(NODE, "deactivate") and probe.change_state(NODE, "cleanup")
    for name, value in (("fit_human", True), ("fit_object", True), ("task", "interaction")):
        assert probe.set_parameter(NODE, name, value).successful
    assert probe.change_state(NODE, "configure") and probe.change_state(NODE, "activate")
    probe.wait_status(lambda s: s["lifecycle_state"] == "active", 30, "active with object fitting")
    size = MANIFEST["frames"][0]["width"]  # same size as the replayed frames (streaming keypoint tracker)
    info = CameraInfo(width=size, height=size, k=[300.0, 0.0, size / 2, 0.0, 300.0, size / 2, 0.0, 0.0, 1.0])
    request = EstimateInteraction.Request(
        image=make_image(sample_rgb(size), 7), camera_info=info, object_query=ros_object_library["label"]
    )
    no_box = probe.call(EstimateInteraction, f"{NODE}/estimate_interaction", request, timeout_s=120)
    assert no_box.success, no_box.message
    assert no_box.estimate.has_object_contact and not no_box.estimate.object_placed
    assert "mask or box" in no_box.estimate.fit_report.message

    request.object_box = RegionOfInterest(
        x_offset=size // 3, y_offset=size // 2, width=size // 4, height=size // 6
    )
    boxed = probe.call(EstimateInteraction, f"{NODE}/estimate_interaction", request, timeout_s=120).estimate
    assert "mask or box" not in boxed.fit_report.message
    assert boxed.object_placed and boxed.human_placed, boxed.fit_report.message
    assert boxed.fit_report.success and boxed.fit_report.iterations > 0
    assert len(boxed.object_mesh.vertices) == ros_object_library["num_vertices"]
    assert len(boxed.object.contact_points) == len(boxed.object.contact_vertex_ids)
    q = boxed.object_pose.orientation
    assert abs(q.x**2 + q.y**2 + q.z**2 + q.w**2 - 1.0) < 1e-5
    assert boxed.object_pose.position.z > 0  # in front of the camera
