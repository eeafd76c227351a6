"""MCAP rosbag2 writing with rosbags: message definitions and type hashes inside, read back intact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from ivlm_core.errors import InvalidInputError
from ivlm_core.mcap_writer import McapBagWriter, ivlm_msg_dir, ros2_typestore

IVLM_TYPES = [f"ivlm_msgs/msg/{p.stem}" for p in sorted(ivlm_msg_dir().glob("*.msg"))]


def _rosidl_hash(msgtype: str) -> str | None:
    """The RIHS01 hash rosidl computed when it built the interface (None when not built here)."""
    package, _, name = msgtype.split("/")
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        path = Path(prefix) / "share" / package / "msg" / f"{name}.json"
        if prefix and path.is_file():
            hashes = json.loads(path.read_text())["type_hashes"]
            return next(h["hash_string"] for h in hashes if h["type_name"] == msgtype)
    return None


@pytest.mark.parametrize("msgtype", IVLM_TYPES)
def test_ivlm_msgs_definitions_hash_like_the_rosidl_build(msgtype: str) -> None:
    built = _rosidl_hash(msgtype)
    if built is None:
        pytest.skip("ivlm_msgs not built into AMENT_PREFIX_PATH (run scripts/setup_venv.sh)")
    assert ros2_typestore().hash_rihs01(msgtype) == built


def test_bag_round_trip_with_definitions(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Reader

    typestore = ros2_typestore()
    HumanContact = typestore.types["ivlm_msgs/msg/HumanContact"]
    Header = typestore.types["std_msgs/msg/Header"]
    Time = typestore.types["builtin_interfaces/msg/Time"]
    stamps = [(1_700_000_001, 0), (1_700_000_002, 500)]
    with McapBagWriter(tmp_path / "bag", typestore) as bag:
        for sec, nsec in stamps:
            msg = HumanContact(
                header=Header(stamp=Time(sec=sec, nanosec=nsec), frame_id="camera_color_optical_frame"),
                contact_stamp=Time(sec=sec, nanosec=nsec), track_id=-1,
                object_query="bottle", model_id="tiny", body_model="smplx", contact_found=True,
                answer_status="contact", answer_message="",
                vertex_contact=np.array([0.1, 0.9], np.float32), contact_threshold=0.5,
                contact_vertex_ids=np.array([1], np.uint32), body_parts=["hand"], generated_text="hand",
            )  # fmt: skip
            bag.write_message("/ivlm/human_contact", "ivlm_msgs/msg/HumanContact", sec * 10**9 + nsec, msg)
        assert bag.mcap_file().suffix == ".mcap"
    with Reader(tmp_path / "bag") as reader:
        (connection,) = reader.connections
        assert connection.msgtype == "ivlm_msgs/msg/HumanContact" and connection.msgcount == 2
        assert "MSG: std_msgs/Header" in connection.msgdef.data  # the full definition, for viewers
        assert "float32[] vertex_contact" in connection.msgdef.data
        got = [typestore.deserialize_cdr(raw, connection.msgtype) for _, _, raw in reader.messages()]
    assert [(m.header.stamp.sec, m.header.stamp.nanosec) for m in got] == stamps
    np.testing.assert_allclose(got[0].vertex_contact, [0.1, 0.9])


def test_writer_refuses_an_existing_folder_and_unknown_types(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(InvalidInputError, match="already exists"):
        McapBagWriter(tmp_path / "taken")
    with McapBagWriter(tmp_path / "bag") as bag, pytest.raises(InvalidInputError, match="unknown message type"):
        bag.add_topic("/x", "nope_msgs/msg/Nothing")
