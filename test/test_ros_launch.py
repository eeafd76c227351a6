"""launch_testing: `launch/ivlm.launch.py` with the tiny model, fed the recorded bag.

Needs `launch`, `launch_ros` and `launch_testing` (a real ROS 2 install, e.g. `apt install
ros-jazzy-launch-testing-ros`) and the package built with colcon so `ivlm_node` is found
(`colcon build --base-paths <repo> <repo>/msg && source install/setup.bash && colcon test --packages-select
ivlm_ros`, or `python -m pytest test/test_ros_launch.py` with the install sourced). Skipped where launch_testing is
not installed (the PyPI wheels have none), and skipped with the reason where ivlm_ros is not installed with colcon.
"""

from __future__ import annotations

import json
import os
import tempfile
import unittest
from pathlib import Path

import pytest

pytest.importorskip("launch_testing")

import launch_testing.actions
import launch_testing.asserts
import launch_testing.markers
import yaml
from ament_index_python.packages import PackageNotFoundError, get_package_prefix
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

from launch import LaunchDescription

try:
    _IVLM_PREFIX = Path(get_package_prefix("ivlm_ros"))
except PackageNotFoundError as _err:
    pytest.skip(
        f"launch_testing is installed but ivlm_ros is not installed with colcon ({_err}): run `colcon build "
        "--base-paths <repo> <repo>/msg && source install/setup.bash` first",
        allow_module_level=True,
    )
if not (_IVLM_PREFIX / "lib" / "ivlm_ros" / "ivlm_node").is_file():
    pytest.skip(
        f"ivlm_ros is registered in {_IVLM_PREFIX} but lib/ivlm_ros/ivlm_node is missing: rebuild it with colcon",
        allow_module_level=True,
    )

REPO = Path(__file__).resolve().parents[1]
BAG = REPO / "test" / "data" / "ivlm_sample_bag"
MANIFEST = json.loads((BAG / "frames.json").read_text())


def _tiny_config(root: Path) -> Path:
    """A parameter file pointing at a freshly built tiny model and synthetic body models."""
    from ivlm_core.testing.synthetic_body import write_synthetic_body_models
    from ivlm_core.testing.tiny_checkpoint import build_tiny_checkpoint

    params = yaml.safe_load((REPO / "config" / "ivlm.yaml").read_text())
    values = params["/**"]["ros__parameters"]
    values.update(
        checkpoint_dir=str(build_tiny_checkpoint(root / "Gen", "Gen")),
        body_model_dir=str(write_synthetic_body_models(root / "body_models")),
        device="cpu",
        require_camera_info=True,
        diagnostics_period_s=0.25,
    )
    path = root / "ivlm_tiny.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.launch_test
@launch_testing.markers.keep_alive
def generate_test_description():
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
    config = _tiny_config(Path(tempfile.mkdtemp(prefix="ivlm_launch_test_")))
    ivlm = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(REPO / "launch" / "ivlm.launch.py")),
        launch_arguments={
            "config_file": str(config),
            "input_reliability": "reliable",
            "image_topic": MANIFEST["topics"]["image"],
            "camera_info_topic": MANIFEST["topics"]["camera_info"],
            "rviz": "false",
        }.items(),
    )
    return LaunchDescription([ivlm, launch_testing.actions.ReadyToTest()])


class TestBagThroughLaunch(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        import rclpy

        rclpy.init()

    @classmethod
    def tearDownClass(cls) -> None:
        import rclpy

        rclpy.try_shutdown()

    def test_bag_frames_come_back_stamped_and_labelled(self) -> None:
        from ivlm_ros.bag_replay import BagReplayer, read_bag
        from ivlm_ros.testing.node_harness import Probe

        probe = Probe()
        try:
            probe.wait_status(
                lambda s: s["lifecycle_state"] == "active", 120, "the launched node to be active"
            )
            topics = [MANIFEST["topics"][k] for k in ("image", "camera_info", "query")]
            replayer = BagReplayer(probe.node, read_bag(BAG, topics))
            replayer.wait_for_subscribers(topics, timeout_s=30, spin=probe.spin)
            replayer.play(rate=1.0, spin=probe.spin)
            stamps = [(f["stamp_sec"], f["stamp_nanosec"]) for f in MANIFEST["frames"]]
            keys = ("markers", "human")  # bodies (camera rate) and contacts (the VLM's rate)
            probe.wait_for(lambda: all(probe.by_stamp(k, *s) for k in keys for s in stamps), 60, "results")
            humans = [
                m for m in probe.received["human"] if (m.header.stamp.sec, m.header.stamp.nanosec) in stamps
            ]
            self.assertEqual([(m.header.stamp.sec, m.header.stamp.nanosec) for m in humans], stamps)
            for msg, frame in zip(humans, MANIFEST["frames"]):
                self.assertEqual(msg.header.frame_id, MANIFEST["frame_id"])
                self.assertEqual(msg.object_query, frame["object_query"])
                self.assertGreater(len(msg.vertex_contact), 0)
        finally:
            probe.destroy()


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_node_exits_cleanly(self, proc_info) -> None:
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
