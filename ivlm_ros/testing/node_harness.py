"""Test harness of the ROS node: the real node in its own process, and a probe node that talks to it.

Shared by the ROS integration tests and the node-overhead benchmark (`ivlm_ros.bench.node_overhead`).

Every process stays on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and on the session's ROS_DOMAIN_ID;
subprocesses inherit the environment (the ROS wheels need their bootstrapped LD_LIBRARY_PATH).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
FRAME_ID = "camera_color_optical_frame"
IMAGE_TOPIC = "/camera/color/image_raw"
INFO_TOPIC = "/camera/color/camera_info"
# The node with an artificially slow contact model (see ivlm_ros.testing.slow_contact_node).
SLOW_CONTACT_NODE = "ivlm_ros.testing.slow_contact_node"
CONTACT_DELAY_ENV = "IVLM_TEST_CONTACT_DELAY_S"
# The node whose idle republish of the last frame fails (see ivlm_ros.testing.failing_republish_node).
FAILING_REPUBLISH_NODE = "ivlm_ros.testing.failing_republish_node"


def ensure_ros_test_env() -> None:
    """Force loopback discovery and a private domain for this test process and its children."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(REPO) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *[p for p in paths if p]])


def tiny_node_params(root: Path) -> dict[str, Any]:
    """Node parameters for the tiny random model and the synthetic body models, built under ``root``."""
    from ivlm_core.testing.synthetic_body import write_synthetic_body_models
    from ivlm_core.testing.tiny_checkpoint import build_tiny_checkpoint

    return {
        "checkpoint_dir": str(build_tiny_checkpoint(root / "Gen", "Gen")),
        "body_model_dir": str(write_synthetic_body_models(root / "body")),
        "device": "cpu",
        "input_reliability": "reliable",
    }


class NodeProcess:
    """``python -m ivlm_ros.node`` (or another ``module`` with the same main) with parameters, in its own
    process group, logging to a file."""

    def __init__(
        self,
        params: dict[str, Any],
        log_path: Path,
        name: str = "ivlm",
        params_file: Path | None = None,
        module: str = "ivlm_ros.node",
    ) -> None:
        args = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}"]
        if params_file is not None:
            args += ["--params-file", str(params_file)]
        for key, value in params.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ["-p", f"{key}:={text}"]
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args,
            cwd=REPO,
            env=os.environ.copy(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        if not self._log.closed:  # stop() closes it; the log stays readable for the failure message
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


class Probe:
    """A test-side rclpy node: records everything the ivlm node publishes and publishes camera input."""

    def __init__(self, ns: str = "/ivlm", reliable_input: bool = True) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from ivlm_msgs.msg import HumanContact, InteractionEstimate, ObjectContact, TrackedBodies
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
        from std_msgs.msg import String
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray

        self.node = rclpy.create_node(f"ivlm_test_probe_{os.getpid()}_{int(time.monotonic() * 1e3) % 100000}")
        self.received: dict[str, list[Any]] = defaultdict(list)
        outputs = {
            "human": (HumanContact, f"{ns}/human_contact"),
            "object": (ObjectContact, f"{ns}/object_contact"),
            "estimate": (InteractionEstimate, f"{ns}/estimate"),
            "markers": (MarkerArray, f"{ns}/markers"),
            "debug": (Image, f"{ns}/debug_image"),
            "diagnostics": (DiagnosticArray, "/diagnostics"),
            "tf": (TFMessage, "/tf"),
            "bodies": (TrackedBodies, f"{ns}/tracked_bodies"),
        }
        for key, (cls, topic) in outputs.items():
            self.node.create_subscription(cls, topic, lambda msg, key=key: self.received[key].append(msg), 50)
        qos = QoSProfile(
            depth=10,
            reliability=ReliabilityPolicy.RELIABLE if reliable_input else ReliabilityPolicy.BEST_EFFORT,
        )
        self.image_pub = self.node.create_publisher(Image, IMAGE_TOPIC, qos)
        self.compressed_pub = self.node.create_publisher(CompressedImage, IMAGE_TOPIC + "/compressed", qos)
        self.info_pub = self.node.create_publisher(CameraInfo, INFO_TOPIC, qos)
        self.query_pub = self.node.create_publisher(String, f"{ns}/object_query", 10)
        self.person_box_pub = self.node.create_publisher(RegionOfInterest, f"{ns}/person_box", 10)

    def spin(self, seconds: float) -> None:
        import rclpy

        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            rclpy.spin_once(self.node, timeout_sec=min(left, 0.05))

    def wait_for(self, predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            self.spin(0.05)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")

    def wait_matched(self, publisher: Any, timeout_s: float = 60.0) -> None:
        self.wait_for(
            lambda: publisher.get_subscription_count() > 0, timeout_s, f"a subscriber on {publisher.topic}"
        )

    def latest_status(self) -> dict[str, str] | None:
        """Key/values of the newest ivlm diagnostics status."""
        for array in reversed(self.received["diagnostics"]):
            for status in array.status:
                if status.name.endswith(": model"):
                    values = {kv.key: kv.value for kv in status.values}
                    values["_level"] = (
                        int.from_bytes(status.level, "little")
                        if isinstance(status.level, bytes)
                        else int(status.level)
                    )
                    values["_message"] = status.message
                    return values
        return None

    def fresh_status(self, timeout_s: float = 10.0) -> dict[str, str]:
        """A status published after everything before this call (two diagnostics periods later)."""
        seen = len(self.received["diagnostics"])
        self.wait_for(lambda: len(self.received["diagnostics"]) >= seen + 2, timeout_s, "fresh diagnostics")
        status = self.latest_status()
        assert status is not None
        return status

    def wait_status(
        self, predicate: Callable[[dict[str, str]], bool], timeout_s: float, what: str
    ) -> dict[str, str]:
        def check() -> dict[str, str] | None:
            status = self.latest_status()
            return status if status is not None and predicate(status) else None

        return self.wait_for(check, timeout_s, what)

    def wait_active(self, node: NodeProcess, timeout_s: float = 90.0) -> None:
        """Wait until the node under test reports the active lifecycle state; fail with its log otherwise."""
        try:
            self.wait_status(lambda s: s["lifecycle_state"] == "active", timeout_s, "the node to become active")
        except AssertionError:
            raise AssertionError(f"node did not become active:\n{node.log()[-3000:]}") from None

    def by_stamp(self, key: str, sec: int, nanosec: int = 0) -> list[Any]:
        return [m for m in self.received[key] if _stamp_of(m) == (sec, nanosec)]

    def publish_frame(
        self,
        rgb: np.ndarray,
        sec: int,
        nanosec: int = 0,
        encoding: str = "rgb8",
        pad: int = 0,
        with_info: bool = True,
    ) -> None:
        from sensor_msgs.msg import CameraInfo

        self.image_pub.publish(make_image(rgb, sec, nanosec, encoding, pad))
        if with_info:
            height, width = rgb.shape[:2]
            info = CameraInfo(height=height, width=width, distortion_model="plumb_bob")
            info.header.stamp.sec, info.header.stamp.nanosec, info.header.frame_id = sec, nanosec, FRAME_ID
            info.k = [300.0, 0.0, width / 2.0, 0.0, 300.0, height / 2.0, 0.0, 0.0, 1.0]
            self.info_pub.publish(info)

    def call(
        self, srv_type: Any, name: str, request: Any, timeout_s: float = 30.0, resend_after_s: float | None = None,
    ) -> Any:
        """The service's response. resend_after_s (idempotent services only): send the request again when no
        response came in that long. "Ready" covers only the request path: a request sent before the server has
        matched the client's response reader can go unanswered, seen under load on a loaded CI machine."""
        client = self.node.create_client(srv_type, name)
        try:
            self.wait_for(client.service_is_ready, timeout_s, f"service {name}")
            futures = [client.call_async(request)]
            sent = [time.monotonic()]

            def answered() -> Any:
                done = next((f for f in futures if f.done()), None)
                if done is None and resend_after_s is not None and time.monotonic() - sent[-1] >= resend_after_s:
                    futures.append(client.call_async(request))
                    sent.append(time.monotonic())
                return done

            return self.wait_for(answered, timeout_s, f"a response from {name}").result()
        finally:
            self.node.destroy_client(client)

    def set_parameter(self, node_name: str, name: str, value: Any) -> Any:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self.call(SetParameters, f"{node_name}/set_parameters", request).results[0]

    def get_parameters(self, node_name: str, names: list[str]) -> dict[str, Any]:
        """name -> value as the node stores it (its Python type shows the stored ROS parameter type)."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        response = self.call(GetParameters, f"{node_name}/get_parameters", GetParameters.Request(names=names),
                             resend_after_s=5.0)
        return {name: parameter_value_to_python(value) for name, value in zip(names, response.values)}

    def change_state(self, node_name: str, label: str) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request(transition=Transition(label=label))
        return self.call(ChangeState, f"{node_name}/change_state", request).success

    def destroy(self) -> None:
        self.node.destroy_node()


def _stamp_of(msg: Any) -> tuple[int, int]:
    if hasattr(msg, "transforms"):
        header = msg.transforms[0].header
    else:
        header = msg.markers[0].header if hasattr(msg, "markers") else msg.header
    return header.stamp.sec, header.stamp.nanosec


def make_image(rgb: np.ndarray, sec: int, nanosec: int = 0, encoding: str = "rgb8", pad: int = 0) -> Any:
    """sensor_msgs/Image of ``rgb`` in ``encoding`` (rgb8, bgr8, mono8, or a raw passthrough like 16UC1)."""
    from sensor_msgs.msg import Image

    if encoding == "bgr8":
        pixels = rgb[:, :, ::-1]
    elif encoding == "mono8":
        pixels = rgb.mean(axis=2, keepdims=True).astype(np.uint8)
    elif encoding == "16UC1":
        pixels = rgb[:, :, :1].astype("<u2")
    else:
        pixels = rgb
    height, width = rgb.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(height, -1).view(np.uint8)
    rows = np.concatenate([rows, np.zeros((height, pad), np.uint8)], axis=1)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=rows.shape[1])
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = sec, nanosec, FRAME_ID
    msg.data = rows.tobytes()
    return msg


def sample_rgb(size: int = 128) -> np.ndarray:
    """A real photo from test/data/samples, resized (deterministic input for the tiny model)."""
    from PIL import Image as PILImage

    path = sorted((REPO / "test" / "data" / "samples").glob("*.png"))[0]
    with PILImage.open(path) as img:
        return np.asarray(img.convert("RGB").resize((size, size)), dtype=np.uint8)
