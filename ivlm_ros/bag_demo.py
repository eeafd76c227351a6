"""Run the ivlm node on a recorded bag and write everything it publishes to a folder.

    python -m ivlm_ros.bag_demo --checkpoint-dir D --body-model-dir D [--clip-dir D] [--bag B] [--out O]
                                [--compressed] [--device auto|cpu|cuda] [--params-file YAML] [--rerun OUT.rrd]

Starts ``python -m ivlm_ros.node`` in its own process (loopback DDS, body fitting on so that the people get TF
frames), waits until it is active, replays the bag frame by frame with :mod:`ivlm_ros.bag_replay` (the next
image goes out when the previous one's results are in, so no frame is dropped however slow the model) and
records:

- ``<out>/mcap/``: an MCAP rosbag2 with everything the node published (``~/human_contact``, ``~/estimate``,
  ``~/markers``, ``~/debug_image``, ``/tf``, ``/diagnostics``, ...) and the camera input it was computed from,
  with the message definitions inside (opens in Foxglove, Lichtblick, ``ros2 bag play``);
- per frame (named by the source stamp): the HumanContact / ObjectContact messages and the fitted object pose
  as JSON (+ per-vertex contact as .npy), the debug image as PNG, a MarkerArray summary; the last diagnostics;
- with ``--rerun OUT.rrd``: a Rerun recording (image, camera frustum, contact-coloured meshes, contact points).

``scripts/run_bag_demo.sh`` wraps this with the venv set-up and the download instructions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BAG = REPO / "test" / "data" / "ivlm_sample_bag"


def _stamp_name(header: Any) -> str:
    return f"{header.stamp.sec}.{header.stamp.nanosec:09d}"


class Recorder:
    """Subscribes to the node's outputs and writes them to ``out`` as they arrive."""

    def __init__(self, node: Any, out: Path, ns: str = "/ivlm") -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from ivlm_msgs.msg import HumanContact, InteractionEstimate, ObjectContact
        from sensor_msgs.msg import Image
        from visualization_msgs.msg import MarkerArray

        self.out = out
        self.counts: dict[str, int] = defaultdict(int)
        self.last_status: dict[str, str] = {}
        self.frames_done: set[str] = set()  # stamps with a HumanContact or ObjectContact
        self.estimated: set[str] = set()  # stamps with an InteractionEstimate that carries its own frame's contact
        self.placed_estimates = 0  # estimates with a placed body: each comes with a /tf of its body frame
        node.create_subscription(HumanContact, f"{ns}/human_contact", self._human, 10)
        node.create_subscription(ObjectContact, f"{ns}/object_contact", self._object, 10)
        node.create_subscription(MarkerArray, f"{ns}/markers", self._markers, 10)
        node.create_subscription(PoseStamped, f"{ns}/object_pose", self._object_pose, 10)
        node.create_subscription(Image, f"{ns}/debug_image", self._debug, 10)
        node.create_subscription(InteractionEstimate, f"{ns}/estimate", self._estimate, 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 10)

    def _human(self, msg: Any) -> None:
        name = _stamp_name(msg.header)
        contact = np.asarray(msg.vertex_contact, dtype=np.float32)
        np.save(self.out / f"{name}_human_vertex_contact.npy", contact)
        summary = {
            "stamp": name,
            "frame_id": msg.header.frame_id,
            "object_query": msg.object_query,
            "model_id": msg.model_id,
            "contact_found": msg.contact_found,
            "num_vertices": int(contact.size),
            "contact_threshold": msg.contact_threshold,
            "num_contact_vertices": len(msg.contact_vertex_ids),
            "body_parts": list(msg.body_parts),
            "generated_text": msg.generated_text,
        }
        (self.out / f"{name}_human_contact.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.frames_done.add(name)
        self.counts["human_contact"] += 1

    def _object(self, msg: Any) -> None:
        name = _stamp_name(msg.header)
        np.save(self.out / f"{name}_object_vertex_contact.npy", np.asarray(msg.vertex_contact, dtype=np.float32))
        summary = {
            "stamp": name,
            "object_label": msg.object_label,
            "mesh_resource": msg.mesh_resource,
            "contact_found": msg.contact_found,
            "affordance": msg.affordance,
            "generated_text": msg.generated_text,
            "num_contact_vertices": len(msg.contact_vertex_ids),
            "num_contact_points": len(msg.contact_points),
        }
        (self.out / f"{name}_object_contact.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.frames_done.add(name)
        self.counts["object_contact"] += 1

    def _object_pose(self, msg: Any) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        summary = {
            "stamp": _stamp_name(msg.header),
            "frame_id": msg.header.frame_id,
            "position_m": [p.x, p.y, p.z],
            "orientation_xyzw": [q.x, q.y, q.z, q.w],
        }
        (self.out / f"{summary['stamp']}_object_pose.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.counts["object_pose"] += 1

    def _markers(self, msg: Any) -> None:
        if not msg.markers:
            return
        name = _stamp_name(msg.markers[0].header)
        summary = [
            {
                "ns": m.ns,
                "id": m.id,
                "type": m.type,
                "action": m.action,
                "points": len(m.points),
                "colors": len(m.colors),
                "frame_id": m.header.frame_id,
            }
            for m in msg.markers
        ]
        (self.out / f"{name}_markers.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.counts["markers"] += 1

    def _estimate(self, msg: Any) -> None:
        self.counts["estimate"] += 1
        self.placed_estimates += bool(msg.human_placed)
        stamp = msg.header.stamp
        if (msg.contact_stamp.sec, msg.contact_stamp.nanosec) == (stamp.sec, stamp.nanosec):
            self.estimated.add(_stamp_name(msg.header))

    def _debug(self, msg: Any) -> None:
        from PIL import Image as PILImage

        from ivlm_ros.image_conversion import image_msg_to_rgb

        PILImage.fromarray(image_msg_to_rgb(msg)).save(self.out / f"{_stamp_name(msg.header)}_debug.png")
        self.counts["debug_image"] += 1

    def _diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.endswith(": model"):
                self.last_status = {kv.key: kv.value for kv in status.values}
                self.last_status["message"] = status.message
                self.last_status["level"] = str(int.from_bytes(status.level, "little"))


def run(args: argparse.Namespace) -> int:
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
    import rclpy

    from ivlm_core.mcap_writer import McapBagWriter
    from ivlm_ros.bag_replay import BagReplayer, read_bag
    from ivlm_ros.mcap_recorder import TopicRecorder, node_topics

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((Path(args.bag) / "frames.json").read_text())
    topics = manifest["topics"]
    image_topic = topics["compressed"] if args.compressed else topics["image"]
    mcap_dir = out / "mcap"
    if mcap_dir.exists():
        shutil.rmtree(mcap_dir)  # the previous run's recording
    params = {
        "checkpoint_dir": args.checkpoint_dir,
        "body_model_dir": args.body_model_dir,
        "clip_dir": args.clip_dir,
        "device": args.device,
        "input_reliability": "reliable",
        "require_camera_info": True,
        "use_compressed": args.compressed,
        "image_topic": topics["image"],
        "camera_info_topic": topics["camera_info"],
        "fit_human": args.fit_human,
    }
    command = [sys.executable, "-m", "ivlm_ros.node", "--ros-args"]
    if args.params_file:
        command += ["--params-file", args.params_file]
    for key, value in params.items():
        if value is not None and value != "":
            command += ["-p", f"{key}:={str(value).lower() if isinstance(value, bool) else value}"]
    log_path = out / "node.log"
    print(f"[demo] starting the node (log: {log_path})")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    rclpy.init()
    node = rclpy.create_node("ivlm_bag_demo")
    recorder = Recorder(node, out)
    recorded = {
        **node_topics("/ivlm"),
        image_topic: "sensor_msgs/msg/CompressedImage" if args.compressed else "sensor_msgs/msg/Image",
        topics["camera_info"]: "sensor_msgs/msg/CameraInfo",
        topics["query"]: "std_msgs/msg/String",
    }
    mcap = TopicRecorder(node, McapBagWriter(mcap_dir), recorded)
    rerun = None
    if args.rerun:
        from ivlm_ros.rerun_recorder import RerunRecorder

        rerun = RerunRecorder(node, args.rerun, image_topic, topics["camera_info"])

    def spin(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            rclpy.spin_once(node, timeout_sec=min(left, 0.05))

    try:
        deadline = time.monotonic() + args.startup_timeout
        while recorder.last_status.get("lifecycle_state") != "active":
            if proc.poll() is not None or time.monotonic() > deadline or recorder.last_status.get("level") == "2":
                spin(0.5)
                print(f"[demo] the node did not become active: {recorder.last_status.get('message', 'no status')}")
                print(f"[demo] see {log_path}")
                return 1
            spin(0.1)
        print(
            f"[demo] node active (model {recorder.last_status.get('model_id')} on "
            f"{recorder.last_status.get('device')}); replaying {args.bag} ({image_topic})"
        )
        wanted = [image_topic, topics["camera_info"], topics["query"]]
        replayer = BagReplayer(node, read_bag(args.bag, wanted))
        replayer.wait_for_subscribers(wanted, timeout_s=30, spin=spin)
        frames = len(manifest["frames"])
        sent: list[int] = []  # bag timestamps of the images published so far

        def wait_for_results(done: int) -> None:
            deadline = time.monotonic() + args.result_timeout
            while len(recorder.frames_done) < done and time.monotonic() < deadline:
                spin(0.05)

        def lockstep(msg: Any) -> None:
            """Anything after image i (the next query, the next frame) waits for image i's results."""
            if sent and msg.timestamp_ns > sent[-1]:
                wait_for_results(len(sent))

        replayer.play(
            rate=args.rate,
            spin=spin,
            before_publish=lockstep,
            on_publish=lambda m: sent.append(m.timestamp_ns) if m.topic == image_topic else None,
        )
        wait_for_results(frames)
        # Large messages (estimate with meshes, markers, debug image) may still be on their way to the recorder.
        per_frame = [f"/ivlm/{name}" for name in ("estimate", "markers", "debug_image")]
        deadline = time.monotonic() + 60.0
        while min(mcap.writer.counts[t] for t in per_frame) < frames and time.monotonic() < deadline:
            spin(0.1)
        # ... and each frame's estimate is published again when its contact arrives, with its /tf: wait for
        # every frame's estimate with its own contact and, once the node has sent any /tf (publish_tf may be
        # off), a /tf message for every placed estimate (a quiet-time rule alone lost the last of either on a
        # loaded machine), then drain until those topics have been quiet for 2 s
        def tf_missing() -> bool:
            sent_tf = mcap.writer.counts.get("/tf", 0)
            return 0 < sent_tf < recorder.placed_estimates

        while ((recorder.counts["estimate"] and not recorder.frames_done <= recorder.estimated)
               or tf_missing()) and time.monotonic() < deadline:
            spin(0.1)
        drained = [*per_frame, "/tf"]
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            total = sum(mcap.writer.counts[t] for t in drained)
            if total != last:
                last, quiet_since = total, time.monotonic()
            elif time.monotonic() - quiet_since >= 2.0:
                break
            spin(0.1)
        (out / "diagnostics.json").write_text(json.dumps(recorder.last_status, indent=2) + "\n")
        print(f"[demo] {frames} frames replayed; received {dict(recorder.counts)}; outputs in {out}")
        mcap.close()
        print(f"[demo] MCAP: {mcap.writer.mcap_file()} ({sum(mcap.writer.counts.values())} messages)")
        if rerun is not None:
            rerun.close()
            print(f"[demo] Rerun: {args.rerun} ({rerun.frames} frames; open with `rerun {args.rerun}`)")
        return 0 if len(recorder.frames_done) >= frames else 1
    finally:
        mcap.close()
        node.destroy_node()
        rclpy.try_shutdown()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", required=True)
    parser.add_argument("--body-model-dir", required=True)
    parser.add_argument("--clip-dir", default="")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--bag", default=str(DEFAULT_BAG))
    parser.add_argument("--out", default=str(REPO / "out" / "ivlm_bag_demo"))
    parser.add_argument("--compressed", action="store_true", help="feed the jpeg topic instead of rgb8")
    parser.add_argument("--params-file", default="", help="extra ROS parameter YAML (e.g. config/ivlm.yaml)")
    parser.add_argument("--rate", type=float, default=1.0, help="bag playback speed (frames still wait for results)")
    parser.add_argument("--rerun", default="", metavar="OUT.rrd", help="also write a Rerun recording (rerun-sdk)")
    parser.add_argument(
        "--no-fit-human", dest="fit_human", action="store_false", help="do not place the body (no body TF frames)"
    )
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to load the model")
    parser.add_argument("--result-timeout", type=float, default=600.0)
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
