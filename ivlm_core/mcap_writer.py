"""Write rosbag2 bags in MCAP storage, with every message definition inside, without ROS (rosbags).

One MCAP file opens in Foxglove, Lichtblick, ``ros2 bag play`` and ``rosbags``. Each topic's schema is the
full ``ros2msg`` definition (the type and everything it uses), so viewers decode ``ivlm_msgs`` without having
the package installed. Messages are written as CDR bytes: the ROS node recorder passes what rclpy received
(``raw=True``), a ROS-free producer can serialise with :attr:`McapBagWriter.typestore`.

The ``ivlm_msgs`` definitions are read from the installed package (``share/ivlm_msgs/msg`` on
``AMENT_PREFIX_PATH``) or, in a source checkout, from ``msg/msg/``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

from ivlm_core.errors import InvalidInputError

REPO_MSG_DIR = Path(__file__).resolve().parents[1] / "msg" / "msg"


def ivlm_msg_dir() -> Path:
    """Folder of the ivlm_msgs ``.msg`` files: the installed package's, else the source tree's."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        candidate = Path(prefix) / "share" / "ivlm_msgs" / "msg"
        if prefix and any(candidate.glob("*.msg")):
            return candidate
    if any(REPO_MSG_DIR.glob("*.msg")):
        return REPO_MSG_DIR
    raise InvalidInputError(
        "ivlm_msgs message definitions not found: source the workspace that built ivlm_msgs "
        "(AMENT_PREFIX_PATH) or run from the ivlm source tree (msg/msg/*.msg)"
    )


def ros2_typestore(extra_msg_dir: Path | None = None) -> Any:
    """The ROS 2 Jazzy typestore of rosbags plus the ivlm_msgs messages."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    typestore = get_typestore(Stores.ROS2_JAZZY)
    types: dict[str, Any] = {}
    for path in sorted((extra_msg_dir or ivlm_msg_dir()).glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"ivlm_msgs/msg/{path.stem}"))
    typestore.register(types)
    return typestore


class McapBagWriter:
    """A rosbag2 folder (``metadata.yaml`` + ``<name>.mcap``); topics are added on first use.

    >>> with McapBagWriter("out/run") as bag:
    ...     bag.write("/ivlm/human_contact", "ivlm_msgs/msg/HumanContact", stamp_ns, cdr_bytes)
    """

    def __init__(self, path: str | Path, typestore: Any = None) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(path)
        if self.path.exists():
            raise InvalidInputError(f"bag folder {self.path} already exists: remove it or choose another name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.typestore = typestore if typestore is not None else ros2_typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Register ``topic`` with its type (definition and RIHS01 hash from the typestore); idempotent."""
        if topic in self._connections:
            if self._connections[topic].msgtype != msgtype:
                raise InvalidInputError(f"topic {topic} was added as {self._connections[topic].msgtype}, not {msgtype}")
            return
        if msgtype not in self.typestore.fielddefs:
            raise InvalidInputError(f"unknown message type {msgtype!r} for {topic}: not in the ROS 2 Jazzy typestore")
        self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.typestore)
        self.counts[topic] = 0

    def write(self, topic: str, msgtype: str, timestamp_ns: int, cdr: bytes) -> None:
        """Append one CDR-serialised message (with its 4-byte encapsulation header) at ``timestamp_ns``."""
        self.add_topic(topic, msgtype)
        self._writer.write(self._connections[topic], int(timestamp_ns), bytes(cdr))
        self.counts[topic] += 1

    def write_message(self, topic: str, msgtype: str, timestamp_ns: int, message: Any) -> None:
        """Serialise a rosbags message object (``typestore.types[msgtype](...)``) and append it."""
        self.write(topic, msgtype, timestamp_ns, self.typestore.serialize_cdr(message, msgtype))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> McapBagWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def mcap_file(self) -> Path:
        """The ``.mcap`` inside the bag folder."""
        (found,) = sorted(self.path.glob("*.mcap"))
        return found
