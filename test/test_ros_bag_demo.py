"""The bag demo end to end with the tiny random model: its MCAP recording and Rerun file, read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from ivlm_ros.testing.node_harness import REPO, ensure_ros_test_env

pytestmark = [pytest.mark.ros, pytest.mark.slow]

BAG = REPO / "test" / "data" / "ivlm_sample_bag"
MANIFEST = json.loads((BAG / "frames.json").read_text())
STAMPS = [(f["stamp_sec"], f["stamp_nanosec"]) for f in MANIFEST["frames"]]


@pytest.fixture(scope="module")
def demo_out(tiny_checkpoints, tiny_body_assets, tmp_path_factory) -> Path:
    ensure_ros_test_env()
    out = Path(tmp_path_factory.mktemp("bag_demo"))
    command = [
        sys.executable, "-m", "ivlm_ros.bag_demo", "--checkpoint-dir", str(tiny_checkpoints["Gen"]),
        "--body-model-dir", str(tiny_body_assets[2]), "--device", "cpu", "--out", str(out),
        "--rerun", str(out / "demo.rrd"), "--startup-timeout", "120", "--result-timeout", "120",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _read_mcap(bag: Path) -> tuple[dict[str, str], dict[str, list]]:
    from rosbags.rosbag2 import Reader

    from ivlm_core.mcap_writer import ros2_typestore

    typestore = ros2_typestore()
    types, messages = {}, defaultdict(list)
    assert "storage_identifier: mcap" in (bag / "metadata.yaml").read_text()
    with Reader(bag) as reader:
        for connection in reader.connections:
            types[connection.topic] = connection.msgtype
            assert connection.msgdef.data  # definitions inside: viewers decode ivlm_msgs without the package
        for connection, _, raw in reader.messages():
            messages[connection.topic].append(typestore.deserialize_cdr(raw, connection.msgtype))
    return types, messages


def _stamp(header) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


def test_mcap_holds_the_node_outputs_and_the_input_with_matching_stamps(demo_out: Path) -> None:
    (mcap,) = (demo_out / "mcap").glob("*.mcap")
    types, messages = _read_mcap(demo_out / "mcap")
    image_topic, info_topic = MANIFEST["topics"]["image"], MANIFEST["topics"]["camera_info"]
    assert types["/ivlm/human_contact"] == "ivlm_msgs/msg/HumanContact"
    assert types["/tf"] == "tf2_msgs/msg/TFMessage" and types[image_topic] == "sensor_msgs/msg/Image"
    assert [_stamp(m.header) for m in messages[image_topic]] == STAMPS
    assert [_stamp(m.header) for m in messages[info_topic]] == STAMPS
    assert [_stamp(m.header) for m in messages["/ivlm/human_contact"]] == STAMPS
    # The body loop publishes each frame at once and again when its contact arrives (lock-step replay: the
    # VLM sees every frame): in order, and each frame's last estimate carries its own contact.
    estimates = messages["/ivlm/estimate"]
    assert sorted({_stamp(m.header) for m in estimates}) == STAMPS
    assert [_stamp(m.header) for m in estimates] == sorted(_stamp(m.header) for m in estimates)
    for stamp in STAMPS:
        last = [m for m in estimates if _stamp(m.header) == stamp][-1]
        assert _stamp(last.header) == stamp and (last.contact_stamp.sec, last.contact_stamp.nanosec) == stamp
    assert sorted({_stamp(m.markers[0].header) for m in messages["/ivlm/markers"]}) == STAMPS
    assert sorted(_stamp(m.header) for m in messages["/ivlm/debug_image"]) == STAMPS
    placed = [(_stamp(m.header), f"body_{m.track_id}") for m in estimates if m.human_placed]
    body_frames = [
        (_stamp(t.header), t.child_frame_id) for m in messages["/tf"] for t in m.transforms
        if t.child_frame_id.startswith("body_")
    ]
    assert placed and body_frames == placed  # one body_<track id> per placed estimate, stamped with its image
    assert {t.header.frame_id for m in messages["/tf"] for t in m.transforms} == {MANIFEST["frame_id"]}
    names = {s.name for m in messages["/diagnostics"] for s in m.status}
    assert {"ivlm: model", "ivlm: input", "ivlm: body tracker", "ivlm: object fit"} <= names
    assert mcap.stat().st_size > 1_000_000  # images and meshes, not just headers


def test_rerun_recording_has_one_frame_per_image(demo_out: Path) -> None:
    pytest.importorskip("rerun", reason="optional extra: pip install -r requirements-viz.txt")
    from ivlm_core.testing.rerun_readback import rrd_rows

    rows = rrd_rows(demo_out / "demo.rrd")
    stamps_ns = [sec * 10**9 + nsec for sec, nsec in STAMPS]
    assert [s for s, _ in rows["/world/camera/image"]] == stamps_ns
    assert [s for s, _ in rows["/world/camera"]] == stamps_ns  # pinhole = frustum from camera_info
    assert any("Mesh3D:vertex_colors" in c for _, c in rows["/world/body"])
