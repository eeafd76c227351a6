"""Body and contact rates of the real node on a 30 Hz stream: the two loops of the node measured end to end.

    python -m ivlm_ros.bench.tracking_rate [--seconds 20] [--size 384] [--max-people 1] [--contact-delay-s 0]

A synthetic stream made from a sample photo (test/data/samples) with small motions (the crop window drifts a
few pixels per frame, as a hand-held camera) goes at 30 Hz to the real node (its own process, tiny random
InteractVLM, synthetic SMPL-X body models, fit_human on, CPU). The bench subscribes only to
``~/tracked_bodies`` and ``~/human_contact`` (the heavy estimate/marker topics are published by the node but
not deserialised here, so the bench itself takes little CPU) and measures, after a warm-up:

* body_hz: TrackedBodies messages per second (the body loop, camera rate at best);
* contact_hz: HumanContact messages per second (the contact loop, the VLM's rate);
* body_latency_ms: from publishing a frame to receiving its TrackedBodies;
* contact_age_ms: header.stamp - contact_stamp of the tracked bodies (how old the painted contact is).

Prints the conditions (CPU count, load average, sizes), mean / median / worst lines and, last,
``body_hz=<f> contact_hz=<f> body_latency_ms=<median> contact_age_ms=<median>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ivlm_core.bench.machine import describe_machine

REPO = Path(__file__).resolve().parents[2]
RATE_HZ = 30.0
WARM_UP_S = 4.0


def drifting_frames(photo: np.ndarray, size: int, count: int, amplitude_px: float = 6.0) -> list[np.ndarray]:
    """``count`` frames of ``size``x``size``: a window over the photo that drifts a few pixels per frame."""
    from PIL import Image as PILImage

    margin = int(np.ceil(2 * amplitude_px)) + 2
    big = np.asarray(
        PILImage.fromarray(photo).convert("RGB").resize((size + 2 * margin, size + 2 * margin)), dtype=np.uint8
    )
    frames = []
    for i in range(count):
        phase = 2 * np.pi * i / 90.0  # one slow sway every 3 s at 30 Hz
        dx = round(margin + amplitude_px * float(np.sin(phase)))
        dy = round(margin + 0.5 * amplitude_px * float(np.sin(2 * phase)))
        frames.append(np.ascontiguousarray(big[dy : dy + size, dx : dx + size]))
    return frames


def _stats(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"mean {statistics.fmean(values):.1f} median {statistics.median(values):.1f} worst {max(values):.1f} "
        f"(n={len(values)})"
    )


def run(seconds: float, size: int, max_people: int, contact_delay_s: float, seed_photo: str) -> dict[str, Any]:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from ivlm_msgs.msg import HumanContact, TrackedBodies
    from PIL import Image as PILImage
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from ivlm_ros.testing.node_harness import (
        CONTACT_DELAY_ENV,
        FRAME_ID,
        IMAGE_TOPIC,
        INFO_TOPIC,
        SLOW_CONTACT_NODE,
        NodeProcess,
        ensure_ros_test_env,
        make_image,
        tiny_node_params,
    )

    ensure_ros_test_env()
    photo_path = sorted((REPO / "test" / "data" / "samples").glob(f"{seed_photo}*.png"))[0]
    with PILImage.open(photo_path) as img:
        photo = np.asarray(img.convert("RGB"))
    count = int(seconds * RATE_HZ)
    frames = drifting_frames(photo, size, count)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        params = {
            **tiny_node_params(root),
            "fit_human": True,
            "max_people": max_people,
            "publish_debug_image": True,
            "diagnostics_period_s": 1.0,
        }
        if contact_delay_s > 0:  # the test scaffolding's node with a contact model that sleeps
            os.environ[CONTACT_DELAY_ENV] = str(contact_delay_s)
        module = SLOW_CONTACT_NODE if contact_delay_s > 0 else "ivlm_ros.node"
        node = NodeProcess(params, root / "node.log", module=module)
        rclpy.init()
        bench = rclpy.create_node(f"ivlm_tracking_rate_{os.getpid()}")
        sent: dict[tuple[int, int], float] = {}
        bodies: list[tuple[float, Any]] = []
        contacts: list[float] = []
        bench.create_subscription(
            TrackedBodies, "/ivlm/tracked_bodies", lambda m: bodies.append((time.monotonic(), m)), 100
        )
        bench.create_subscription(
            HumanContact, "/ivlm/human_contact", lambda m: contacts.append(time.monotonic()), 100
        )
        processed: list[tuple[float, int]] = []  # (arrival, the node's body_frames_processed) from /diagnostics

        def on_diagnostics(msg: DiagnosticArray) -> None:
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                if status.name.endswith(": model") and "body_frames_processed" in values:
                    processed.append((time.monotonic(), int(values["body_frames_processed"])))

        bench.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        image_pub = bench.create_publisher(Image, IMAGE_TOPIC, qos)
        info_pub = bench.create_publisher(CameraInfo, INFO_TOPIC, qos)
        try:
            deadline = time.monotonic() + 180
            while (image_pub.get_subscription_count() == 0 or not bodies_ready(bench)) and time.monotonic() < deadline:
                rclpy.spin_once(bench, timeout_sec=0.1)
            if image_pub.get_subscription_count() == 0:
                raise RuntimeError(f"the node did not come up:\n{node.log()[-3000:]}")
            info = CameraInfo(height=size, width=size, distortion_model="plumb_bob")
            info.header.frame_id = FRAME_ID
            info.k = [1.2 * size, 0.0, size / 2, 0.0, 1.2 * size, size / 2, 0.0, 0.0, 1.0]
            start = time.monotonic()
            late_ms = 0.0  # how far behind schedule the stream fell (the bench's own stalls)
            for i, rgb in enumerate(frames):
                due = start + i / RATE_HZ
                while (left := due - time.monotonic()) > 0:
                    rclpy.spin_once(bench, timeout_sec=min(left, 0.005))
                late_ms = max(late_ms, (time.monotonic() - due) * 1e3)
                sec, nanosec = 1000 + i // 30, int((i % 30) * 1e9 / 30)
                msg = make_image(rgb, sec, nanosec)
                info.header.stamp.sec, info.header.stamp.nanosec = sec, nanosec
                sent[(sec, nanosec)] = time.monotonic()
                info_pub.publish(info)
                image_pub.publish(msg)
            end = time.monotonic()
            drain = time.monotonic() + 3.0
            while time.monotonic() < drain:
                rclpy.spin_once(bench, timeout_sec=0.05)
        finally:
            bench.destroy_node()
            rclpy.try_shutdown()
            node.stop()
            log = node.log()
    window = (start + WARM_UP_S, end)
    in_window = [(t, m) for t, m in bodies if window[0] <= t <= window[1]]
    stamps_seen: set[tuple[int, int]] = set()
    latencies, ages, tracked = [], [], 0
    worst = (0.0, 0.0)  # (latency ms, when the frame was sent, s after the stream started)
    sources: dict[str, int] = {}  # how the tracked people were found (full_image, crop_search, ...)
    reinitialised = 0  # bodies re-fitted from scratch
    for t, msg in in_window:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if stamp in stamps_seen or stamp not in sent:
            continue  # a republish of the same frame (a contact arrived while no newer frame came)
        stamps_seen.add(stamp)
        latencies.append((t - sent[stamp]) * 1e3)
        worst = max(worst, (latencies[-1], sent[stamp] - start))
        tracked += int(bool(msg.bodies))
        for body in msg.bodies:
            sources[body.source] = sources.get(body.source, 0) + 1
            reinitialised += int(body.reinitialised)
        for body in msg.bodies:
            if body.has_contact:
                age = (msg.header.stamp.sec - body.contact_stamp.sec) * 1e3
                age += (msg.header.stamp.nanosec - body.contact_stamp.nanosec) * 1e-6
                ages.append(age)
    span = window[1] - window[0]
    inside = [n for t, n in processed if window[0] <= t <= window[1]]
    node_hz = (inside[-1] - inside[0]) / span if len(inside) >= 2 else float("nan")
    contact_count = sum(1 for t in contacts if window[0] <= t <= window[1])
    return {
        "frames_sent": count,
        "window_s": span,
        "body_frames": len(stamps_seen),
        "tracked_frames": tracked,
        "body_hz": len(stamps_seen) / span,
        "contact_hz": contact_count / span,
        "latencies": latencies,
        "worst_at_s": worst[1],
        "node_body_hz": node_hz,
        "late_ms": late_ms,
        "sources": sources,
        "reinitialised": reinitialised,
        "ages": ages,
        "node_log_tail": log[-1500:],
        "node_log": log,
    }


def bodies_ready(node: Any) -> bool:
    """The node publishes ~/tracked_bodies (it is configured and active)."""
    return bool(node.get_publishers_info_by_topic("/ivlm/tracked_bodies"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="stream length at 30 Hz")
    parser.add_argument("--size", type=int, default=384, help="frame width = height in pixels (the bag's 384)")
    parser.add_argument("--max-people", type=int, default=1)
    parser.add_argument("--photo", default="bench__standing", help="sample photo (test/data/samples) prefix")
    parser.add_argument(
        "--contact-delay-s", type=float, default=0.0,
        help="slow the contact model down by this much per call (ivlm_ros.testing.slow_contact_node)",
    )
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"conditions: machine: {describe_machine()} (5- and 15-minute load {load[1]:.2f} {load[2]:.2f}) at start; "
        f"tiny random InteractVLM (Gen) + synthetic SMPL-X, device cpu, fit_human on, max_people "
        f"{args.max_people}; {args.seconds:.0f} s of {args.size}x{args.size} rgb8 frames at {RATE_HZ:.0f} Hz "
        f"drifting over {args.photo}; first {WARM_UP_S:.0f} s not counted"
    )
    figures = run(args.seconds, args.size, args.max_people, args.contact_delay_s, args.photo)
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        f"frames sent {figures['frames_sent']}; in the {figures['window_s']:.1f} s window: "
        f"{figures['body_frames']} body frames ({figures['tracked_frames']} with a tracked person; found by "
        f"{figures['sources']}; {figures['reinitialised']} re-initialised)"
    )
    print(f"body latency ms: {_stats(figures['latencies'])}; worst for the frame sent at {figures['worst_at_s']:.1f} s")
    print(f"contact age ms: {_stats(figures['ages'])}")
    print(
        f"node side: body loop {figures['node_body_hz']:.2f} frames/s by its diagnostics (body_frames_processed); "
        f"the bench's stream fell at most {figures['late_ms']:.0f} ms behind schedule"
    )
    if not figures["tracked_frames"]:
        print("nobody tracked; node log tail:\n" + figures["node_log_tail"])
    slow = [line for line in figures["node_log"].splitlines() if "slow body frame" in line]
    for line in slow[:5]:
        print("node:", line.split("]: ", 1)[-1])
    latency = statistics.median(figures["latencies"]) if figures["latencies"] else float("nan")
    age = statistics.median(figures["ages"]) if figures["ages"] else float("nan")
    print(
        f"body_hz={figures['body_hz']:.2f} contact_hz={figures['contact_hz']:.2f} "
        f"body_latency_ms={latency:.1f} contact_age_ms={age:.1f}"
    )


if __name__ == "__main__":
    main()
