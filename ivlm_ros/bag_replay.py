"""Replay a rosbag2 folder into a live ROS graph with rclpy (``ros2 bag`` is not on PyPI).

Messages are published as the bag's raw CDR bytes (no deserialisation), with RELIABLE QoS (best effort drops
large images when the reader is busy), after waiting until each topic's subscribers have matched (messages
sent before discovery are lost), and paced by the bag's timestamps divided by ``rate``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from rosbags.rosbag2 import Reader


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str  # e.g. "sensor_msgs/msg/Image"
    timestamp_ns: int
    raw: bytes  # CDR with its 4-byte encapsulation header


def read_bag(bag_dir: str | Path, topics: Iterable[str] | None = None) -> list[BagMessage]:
    """All messages (optionally of some topics) in time order."""
    wanted = None if topics is None else set(topics)
    out: list[BagMessage] = []
    with Reader(Path(bag_dir)) as reader:
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        for connection, timestamp, raw in reader.messages(connections=connections):
            out.append(BagMessage(connection.topic, connection.msgtype, timestamp, bytes(raw)))
    out.sort(key=lambda m: m.timestamp_ns)
    return out


def message_class(msgtype: str) -> Any:
    """'sensor_msgs/msg/Image' -> the generated rclpy class."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


class BagReplayer:
    """Publishers for a bag's topics on ``node``; ``remap`` renames topics (bag topic -> live topic)."""

    def __init__(
        self,
        node: Node,
        messages: list[BagMessage],
        remap: dict[str, str] | None = None,
        reliability: QoSReliabilityPolicy = QoSReliabilityPolicy.RELIABLE,
        depth: int = 10,
    ) -> None:
        self.node = node
        self.messages = messages
        self.remap = dict(remap or {})
        qos = QoSProfile(depth=depth, reliability=reliability)
        self.publishers: dict[str, Any] = {}
        for msg in messages:
            if msg.topic not in self.publishers:
                live = self.remap.get(msg.topic, msg.topic)
                self.publishers[msg.topic] = node.create_publisher(message_class(msg.msgtype), live, qos)

    def wait_for_subscribers(
        self, topics: Iterable[str], timeout_s: float, spin: Callable[[float], None] | None = None
    ) -> None:
        """Block until every listed bag topic has a matched subscriber (TimeoutError names the missing)."""
        deadline = time.monotonic() + timeout_s
        pending = set(topics)
        while pending:
            pending = {t for t in pending if self.publishers[t].get_subscription_count() == 0}
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no subscriber matched {sorted(pending)} within {timeout_s:.0f} s")
            if spin is not None:
                spin(0.05)
            else:
                time.sleep(0.05)

    def play(
        self,
        rate: float = 1.0,
        topics: Iterable[str] | None = None,
        spin: Callable[[float], None] | None = None,
        on_publish: Callable[[BagMessage], None] | None = None,
        before_publish: Callable[[BagMessage], None] | None = None,
    ) -> int:
        """Publish in bag order, paced by bag time / rate; ``spin(seconds)`` is called while waiting.

        ``before_publish(msg)`` may block (e.g. until the previous frame's results are in); pacing then
        resumes from the moment it returns."""
        chosen = None if topics is None else set(topics)
        selected = [m for m in self.messages if chosen is None or m.topic in chosen]
        if not selected:
            return 0
        t0_bag, t0_wall = selected[0].timestamp_ns, time.monotonic()
        for msg in selected:
            if before_publish is not None:
                due = t0_wall + (msg.timestamp_ns - t0_bag) * 1e-9 / rate
                before_publish(msg)
                t0_wall += max(0.0, time.monotonic() - due)
            due = t0_wall + (msg.timestamp_ns - t0_bag) * 1e-9 / rate
            while (wait := due - time.monotonic()) > 0:
                if spin is not None:
                    spin(min(wait, 0.05))
                else:
                    time.sleep(min(wait, 0.05))
            self.publishers[msg.topic].publish(msg.raw)
            if on_publish is not None:
                on_publish(msg)
        return len(selected)
