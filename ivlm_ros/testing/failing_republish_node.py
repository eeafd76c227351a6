"""The ivlm node whose idle republish of the last frame always fails, for the test of ``republish_failed``.

    python -m ivlm_ros.testing.failing_republish_node --ros-args ...

Wraps the node's MarkerArray encoder so that encoding markers for a stamp it already encoded raises: the
first publish of each frame succeeds, and the body loop's republish of that frame (same stamp, new contacts)
fails inside ``_publish_bodies`` as a real publishing error would. Test scaffolding: no product module
imports it.
"""

from __future__ import annotations

import sys
from typing import Any

import ivlm_ros.node as node_module
from ivlm_ros.node import main

INJECTED_ERROR = "injected: markers of this stamp were already encoded"


def fail_marker_republish() -> None:
    """Make the node's marker encoding raise for a stamp it has encoded before (a republish)."""
    encode = node_module.encode_marker_array
    encoded: set[tuple[int, int, str]] = set()

    def encode_once(markers: Any, sec: int, nanosec: int, frame_id: str) -> Any:
        key = (sec, nanosec, frame_id)
        if key in encoded:
            raise RuntimeError(INJECTED_ERROR)
        encoded.add(key)
        return encode(markers, sec, nanosec, frame_id)

    node_module.encode_marker_array = encode_once


if __name__ == "__main__":
    fail_marker_republish()
    sys.exit(main())
