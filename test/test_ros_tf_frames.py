"""TF frames: body_<id> at the pelvis (REP-155 axes), object_<label> at the fitted pose, on /tf."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ivlm_core.pipeline import BodyPlacement, InteractionResult, ObjectContactEstimate, ObjectPlacement

pytestmark = pytest.mark.ros

FRAME = "camera_color_optical_frame"


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory):
    from ivlm_core.fitting.body_fit import load_body_layer
    from ivlm_core.testing.synthetic_body import write_synthetic_smplx

    root = tmp_path_factory.mktemp("tf_body_models")
    write_synthetic_smplx(root)
    return load_body_layer(root)


def _body(layer, global_orient: np.ndarray, transl: np.ndarray) -> BodyPlacement:
    from ivlm_core.fitting.external_body import body_from_smplx_params

    params = {"global_orient": global_orient, "body_pose": np.zeros(63, np.float32), "transl": transl}
    return BodyPlacement(**body_from_smplx_params(params, layer).placement_kwargs())


def _result(body: BodyPlacement | None, object_placement: ObjectPlacement | None = None) -> InteractionResult:
    obj = None
    if object_placement is not None:
        verts = np.zeros((3, 3), np.float32)
        obj = ObjectContactEstimate("tennis racket", "", verts, np.array([[0, 1, 2]]), True, None, "", "", None, None)
    return InteractionResult("scene", "interaction", None, obj, None, body, object_placement)


def _header(sec: int = 12, nanosec: int = 345):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=FRAME)


def _matrix(transform) -> tuple[np.ndarray, np.ndarray]:
    q, t = transform.transform.rotation, transform.transform.translation
    return Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix(), np.array([t.x, t.y, t.z])


def test_body_frame_sits_at_the_pelvis_with_rep155_axes(layer) -> None:
    from ivlm_ros.tf_frames import interaction_transforms

    # Upright person facing the camera: SMPL-X y (up) -> camera -y (up in the image), z (front) -> camera -z.
    facing_camera = Rotation.from_euler("x", 180, degrees=True).as_rotvec().astype(np.float32)
    body = _body(layer, facing_camera, np.array([0.1, -0.2, 3.0], np.float32))
    (tf,) = interaction_transforms(_header(), _result(body))
    assert tf.header.frame_id == FRAME and tf.child_frame_id == "body_0"
    assert (tf.header.stamp.sec, tf.header.stamp.nanosec) == (12, 345)
    rotation, translation = _matrix(tf)
    pelvis = body.joints[0].astype(np.float64)
    np.testing.assert_allclose(rotation.T @ (pelvis - translation), 0.0, atol=1e-6)  # pelvis -> body origin
    np.testing.assert_allclose(rotation[:, 0], [0, 0, -1], atol=1e-6)  # x forward: towards the camera
    np.testing.assert_allclose(rotation[:, 2], [0, -1, 0], atol=1e-6)  # z up: image up
    np.testing.assert_allclose(rotation[:, 1], [1, 0, 0], atol=1e-6)  # y left: the person's left = image right


def test_body_frame_follows_any_root_orientation(layer) -> None:
    from ivlm_ros.tf_frames import interaction_transforms

    rng = np.random.default_rng(3)
    orient = rng.normal(size=3).astype(np.float32)
    body = _body(layer, orient, np.array([0.0, 0.3, 2.0], np.float32))
    (tf,) = interaction_transforms(_header(), _result(body), body_prefix="human_")
    assert tf.child_frame_id == "human_0"
    rotation, translation = _matrix(tf)
    # every joint expressed in the body frame equals the unrotated (canonical, pelvis-centred) skeleton
    canonical = _body(layer, np.zeros(3, np.float32), np.zeros(3, np.float32)).joints.astype(np.float64)
    in_body = (body.joints.astype(np.float64) - translation) @ rotation
    from ivlm_ros.tf_frames import SMPLX_TO_REP155

    np.testing.assert_allclose(in_body, (canonical - canonical[0]) @ SMPLX_TO_REP155, atol=1e-5)


def test_object_frame_and_what_gets_no_frame(layer) -> None:
    from ivlm_ros.tf_frames import interaction_transforms

    rotation = Rotation.from_euler("z", 30, degrees=True).as_matrix()
    placed = ObjectPlacement(True, "ok", rotation, np.array([0.2, 0.0, 1.5]))
    transforms = interaction_transforms(_header(), _result(None, placed), object_prefix="obj/")
    assert [t.child_frame_id for t in transforms] == ["obj/tennis_racket"]
    got_rotation, got_translation = _matrix(transforms[0])
    np.testing.assert_allclose(got_rotation, rotation, atol=1e-9)
    np.testing.assert_allclose(got_translation, [0.2, 0.0, 1.5])
    # not placed, or a mesh without joints (external OSX body): no frame rather than a wrong one
    assert (
        interaction_transforms(_header(), _result(BodyPlacement(False, "no K"), ObjectPlacement(False, "no box"))) == []
    )
    mesh_only = BodyPlacement(True, "osx", np.zeros((4, 3), np.float32), np.zeros((1, 3), np.int64), {})
    assert interaction_transforms(_header(), _result(mesh_only)) == []


def test_pip_tf2_msgs_has_the_official_type_hash() -> None:
    """The pip-only tf2_msgs build (scripts/pip_interfaces) hashes like the real Jazzy tf2_msgs."""
    from pathlib import Path

    from rosbags.typesys import Stores, get_typestore

    official = get_typestore(Stores.ROS2_JAZZY).hash_rihs01("tf2_msgs/msg/TFMessage")
    found = []
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        description = Path(prefix) / "share" / "tf2_msgs" / "msg" / "TFMessage.json"
        if description.is_file():
            hashes = json.loads(description.read_text())["type_hashes"]
            found += [h["hash_string"] for h in hashes if h["type_name"] == "tf2_msgs/msg/TFMessage"]
    assert found and found[0] == official


def test_broadcaster_publishes_tf_messages(ros_context, layer) -> None:
    import time

    import rclpy
    from tf2_msgs.msg import TFMessage

    from ivlm_ros.tf_frames import TF_QOS, TfBroadcaster, interaction_transforms

    node = rclpy.create_node(f"ivlm_tf_test_{os.getpid()}")
    received: list = []
    node.create_subscription(TFMessage, "/tf", received.append, TF_QOS)
    try:
        broadcaster = TfBroadcaster(node)
        assert broadcaster.backend in ("tf2_ros", "tf2_msgs")
        body = _body(layer, np.zeros(3, np.float32), np.array([0.0, 0.0, 2.0], np.float32))
        transforms = interaction_transforms(_header(), _result(body))
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            broadcaster.send(transforms)
            rclpy.spin_once(node, timeout_sec=0.1)
        assert received and [t.child_frame_id for t in received[0].transforms] == ["body_0"]
        assert received[0].transforms[0].header.frame_id == FRAME
        broadcaster.destroy()
    finally:
        node.destroy_node()
