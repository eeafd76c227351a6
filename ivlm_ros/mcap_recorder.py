"""Record live topics into an MCAP rosbag2 (``ros2 bag record`` is not on PyPI): raw rclpy subscriptions
that append each message's CDR bytes, at its receive time, to an :class:`ivlm_core.mcap_writer.McapBagWriter`.

:func:`node_topics` lists everything the ivlm node publishes, so a recording holds its whole output next to
the camera input it was computed from.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy

from ivlm_core.mcap_writer import McapBagWriter
from ivlm_ros.bag_replay import message_class

# The ivlm node's outputs: topic relative to the node's namespace + name (~), or absolute.
NODE_OUTPUTS: dict[str, str] = {
    "~/human_contact": "ivlm_msgs/msg/HumanContact",
    "~/object_contact": "ivlm_msgs/msg/ObjectContact",
    "~/estimate": "ivlm_msgs/msg/InteractionEstimate",
    "~/tracked_bodies": "ivlm_msgs/msg/TrackedBodies",
    "~/object_pose": "geometry_msgs/msg/PoseStamped",
    "~/contact_mask": "sensor_msgs/msg/Image",
    "~/markers": "visualization_msgs/msg/MarkerArray",
    "~/debug_image": "sensor_msgs/msg/Image",
    "/tf": "tf2_msgs/msg/TFMessage",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}


def node_topics(node_fqn: str = "/ivlm") -> dict[str, str]:
    """{absolute topic: type} of the node's outputs, for a node named ``node_fqn`` (e.g. '/robot/ivlm')."""
    return {(node_fqn.rstrip("/") + t[1:] if t.startswith("~/") else t): kind for t, kind in NODE_OUTPUTS.items()}


class TopicRecorder:
    """Subscribes to ``topics`` ({topic: type}) on ``node`` and writes every message to ``writer``."""

    def __init__(self, node: Node, writer: McapBagWriter, topics: Mapping[str, str], depth: int = 100) -> None:
        self.node = node
        self.writer = writer
        qos = QoSProfile(depth=depth, reliability=QoSReliabilityPolicy.RELIABLE)
        self._subscriptions: list[Any] = []
        for topic, msgtype in topics.items():
            writer.add_topic(topic, msgtype)
            callback = partial(self._on_message, topic, msgtype)
            self._subscriptions.append(node.create_subscription(message_class(msgtype), topic, callback, qos, raw=True))

    def _on_message(self, topic: str, msgtype: str, raw: bytes) -> None:
        self.writer.write(topic, msgtype, self.node.get_clock().now().nanoseconds, raw)

    def close(self) -> None:
        for sub in self._subscriptions:
            self.node.destroy_subscription(sub)
        self._subscriptions = []
        self.writer.close()
