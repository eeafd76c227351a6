"""TF frames of what the node placed: ``body_<id>`` at each person's pelvis and ``object_<label>`` at each
fitted object, children of the source image's optical frame and stamped with the image.

Manipulation and HRI stacks look people and objects up in TF before they read any custom message. The body
frame follows REP-155 (ROS4HRI): origin at the pelvis joint, x forward (the way the person faces), y to the
person's left, z up. SMPL-X's canonical body faces +z with y up and x to its left, so the body frame is the
pelvis rotation (``global_orient``, in the camera frame) times a fixed axis permutation.

On a real ROS install the frames go out through ``tf2_ros.TransformBroadcaster``; on the pip set-up (no
``tf2_ros`` on PyPI) a ``tf2_msgs/msg/TFMessage`` publisher on ``/tf`` with tf2's QoS does the same job.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import Quaternion, Transform, TransformStamped, Vector3
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation
from std_msgs.msg import Header

# Columns: the REP-155 body axes (x forward, y left, z up) in SMPL-X's canonical axes (x left, y up, z forward).
SMPLX_TO_REP155 = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
PELVIS_JOINT = 0
_FRAME_CHARS = re.compile(r"[^A-Za-z0-9_]")


def frame_label(label: str) -> str:
    """An object label as a TF frame-id part ('tennis racket' -> 'tennis_racket')."""
    return _FRAME_CHARS.sub("_", label.strip()) or "unnamed"


def body_frame_pose(placement: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(rotation (3,3), pelvis position (3,)) of a placed SMPL-X body in the camera frame, or None when the
    body is not placed or has no joints / root orientation (e.g. an external OSX mesh)."""
    if placement is None or not placement.placed:
        return None
    joints = getattr(placement, "joints", None)
    orient = (placement.params or {}).get("global_orient")
    if joints is None or orient is None:
        return None
    pelvis = np.asarray(joints, dtype=np.float64).reshape(-1, 3)[PELVIS_JOINT]
    root = Rotation.from_rotvec(np.asarray(orient, dtype=np.float64).reshape(3)).as_matrix()
    rotation = root @ SMPLX_TO_REP155
    if not (np.isfinite(pelvis).all() and np.isfinite(rotation).all()):
        return None
    return rotation, pelvis


def transform_msg(header: Header, child: str, rotation: np.ndarray, translation: np.ndarray) -> TransformStamped:
    qx, qy, qz, qw = Rotation.from_matrix(np.asarray(rotation, dtype=np.float64)).as_quat()
    x, y, z = (float(v) for v in np.asarray(translation, dtype=np.float64).reshape(3))
    return TransformStamped(
        header=header,
        child_frame_id=child,
        transform=Transform(
            translation=Vector3(x=x, y=y, z=z),
            rotation=Quaternion(x=float(qx), y=float(qy), z=float(qz), w=float(qw)),
        ),
    )


def interaction_transforms(
    header: Header, result: Any, body_prefix: str = "body_", object_prefix: str = "object_", person_id: int = 0
) -> list[TransformStamped]:
    """The frames of one result: the placed person (``<body_prefix><person_id>``: the track id, ``body_0`` for an
    untracked body) and the fitted object, all children of ``header.frame_id`` at ``header.stamp``."""
    transforms = []
    pose = body_frame_pose(result.body_placement)
    if pose is not None:
        transforms.append(transform_msg(header, f"{body_prefix}{max(int(person_id), 0)}", *pose))
    placement = result.object_placement
    if placement is not None and placement.placed and result.object is not None:
        child = f"{object_prefix}{frame_label(result.object.label)}"
        transforms.append(transform_msg(header, child, placement.rotation, placement.translation))
    return transforms


# tf2_ros.DynamicBroadcasterQoS: reliable, volatile, depth 100.
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


class TfBroadcaster:
    """``tf2_ros.TransformBroadcaster`` where it is installed, else a ``TFMessage`` publisher on ``/tf``."""

    def __init__(self, node: Any) -> None:
        self.backend = ""
        self._node = node
        self._broadcaster: Any = None
        self._publisher: Any = None
        try:
            from tf2_ros import TransformBroadcaster

            self._broadcaster = TransformBroadcaster(node)
            self.backend = "tf2_ros"
            return
        except ImportError:
            pass
        from tf2_msgs.msg import TFMessage  # ImportError here: neither tf2_ros nor tf2_msgs installed

        self._message = TFMessage
        self._publisher = node.create_publisher(TFMessage, "/tf", TF_QOS)
        self.backend = "tf2_msgs"

    def send(self, transforms: list[TransformStamped]) -> None:
        if not transforms:
            return
        if self._broadcaster is not None:
            self._broadcaster.sendTransform(transforms)
        else:
            self._publisher.publish(self._message(transforms=transforms))

    def destroy(self, destroy_publisher: Callable[[Any], Any] | None = None) -> None:
        """Destroys the /tf publisher with ``destroy_publisher`` (default: the node's ``destroy_publisher``)."""
        destroy_publisher = destroy_publisher or self._node.destroy_publisher
        if self._publisher is not None:
            destroy_publisher(self._publisher)
        elif self._broadcaster is not None:
            destroy_publisher(self._broadcaster.pub_tf)
        self._publisher = self._broadcaster = None
