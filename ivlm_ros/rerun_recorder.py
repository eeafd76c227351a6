"""Log the ivlm node's live output to a Rerun recording: the input image and camera, and from each
``~/estimate`` the placed body and object meshes with their contact colours, on the image-stamp timeline.

The bag demo's ``--rerun out.rrd``; the logging itself is :class:`ivlm_core.viz.rerun_log.RerunRecording`.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy

from ivlm_core.viz.rerun_log import ContactMesh, RerunRecording
from ivlm_ros.bag_replay import message_class

_KEEP_FRAMES = 30


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def mesh_arrays(mesh: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(vertices, faces) of a shape_msgs/Mesh, or None when empty."""
    if not mesh.vertices or not mesh.triangles:
        return None
    vertices = np.array([(p.x, p.y, p.z) for p in mesh.vertices], dtype=np.float64)
    faces = np.array([t.vertex_indices for t in mesh.triangles], dtype=np.int64)
    return vertices, faces


def estimate_meshes(estimate: Any) -> tuple[ContactMesh | None, ContactMesh | None, np.ndarray | None]:
    """(body, object, object contact points) of an InteractionEstimate; meshes only where placed."""
    body = obj = points = None
    human = mesh_arrays(estimate.human_mesh) if estimate.human_placed else None
    if human is not None:
        contact = np.asarray(estimate.human.vertex_contact, dtype=np.float32)
        body = ContactMesh(*human, contact if len(contact) == len(human[0]) else None)
    placed_object = mesh_arrays(estimate.object_mesh) if estimate.object_placed else None
    if placed_object is not None:
        contact = np.asarray(estimate.object.vertex_contact, dtype=np.float32)
        obj = ContactMesh(*placed_object, contact if len(contact) == len(placed_object[0]) else None)
        points = np.array([(p.x, p.y, p.z) for p in estimate.object.contact_points], dtype=np.float64)
    return body, obj, points


class RerunRecorder:
    """Subscribes to the camera input and the node's ``~/estimate``; logs one Rerun frame per estimate."""

    def __init__(
        self, node: Node, path: str | Path, image_topic: str, info_topic: str, estimate_topic: str = "/ivlm/estimate"
    ) -> None:
        from ivlm_msgs.msg import InteractionEstimate
        from sensor_msgs.msg import CameraInfo

        self.recording = RerunRecording(path)
        self._images: OrderedDict[int, Any] = OrderedDict()
        self._infos: OrderedDict[int, Any] = OrderedDict()
        qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
        compressed = image_topic.endswith("/compressed")
        image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
        node.create_subscription(message_class(image_type), image_topic, self._keep(self._images), qos)
        node.create_subscription(CameraInfo, info_topic, self._keep(self._infos), qos)
        node.create_subscription(InteractionEstimate, estimate_topic, self._on_estimate, qos)

    @staticmethod
    def _keep(store: OrderedDict[int, Any]) -> Any:
        def callback(msg: Any) -> None:
            store[_stamp_ns(msg.header)] = msg
            while len(store) > _KEEP_FRAMES:
                store.popitem(last=False)

        return callback

    def _on_estimate(self, estimate: Any) -> None:
        """Log the estimate's meshes; the photo and camera once per stamp (the node republishes a frame when its
        contact arrives, and sends one estimate per person)."""
        from ivlm_ros.node import camera_matrix, decode_image

        stamp = _stamp_ns(estimate.header)
        image = self._images.pop(stamp, None)
        body, obj, points = estimate_meshes(estimate)
        self.recording.log_frame(
            stamp,
            decode_image(image) if image is not None else None,
            camera_matrix(self._infos.get(stamp))[0],  # (K or None, problem)
            body,
            obj,
            points,
        )

    @property
    def frames(self) -> int:
        return self.recording.frames

    def close(self) -> None:
        self.recording.close()
