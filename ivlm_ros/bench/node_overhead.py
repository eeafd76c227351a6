"""Per-frame CPU overhead of the ivlm node around the model, and end-to-end latency with the tiny model.

    python -m ivlm_ros.bench.node_overhead [--frames 10] [--repeats 20]

Overhead (in this process, median of --repeats): decode a 640x480 rgb8 Image (and a jpeg CompressedImage,
reported but not summed: a node uses one or the other), lift 4 x 1024^2 SAM logits to the SMPL-H body (the
lifting the pipeline runs per frame), build + serialise the MarkerArray for a full SMPL-X-size mesh (10475
vertices, 20908 faces) with contact spheres, build the typed messages, compose the debug image, and publish
everything through real rclpy/DDS to a subscriber. End to end: the real node in its own process with the tiny
random model; a frame is published and the clock stops when its MarkerArray arrives (median over --frames).
Last line: ``overhead_ms=<float> e2e_ms=<float>``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ivlm_core.bench.machine import describe_machine

SMPLX_VERTICES, SMPLX_FACES = 10475, 20908
REPO = Path(__file__).resolve().parents[2]


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (imports, numba/JIT, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _full_size_result(rng: np.random.Generator, views: np.ndarray, logits: np.ndarray) -> Any:
    """A pipeline-shaped result on an SMPL-X-size mesh (the sizes are what the cost depends on)."""
    from ivlm_core.pipeline import HumanContactEstimate, InteractionResult

    vertices = rng.normal(size=(SMPLX_VERTICES, 3)).astype(np.float32) * [0.2, 0.6, 0.1]
    faces = rng.integers(0, SMPLX_VERTICES, size=(SMPLX_FACES, 3))
    contact = rng.random(SMPLX_VERTICES).astype(np.float32) ** 4
    human = HumanContactEstimate(
        True, "The contacting body parts are <hands>, [SEG].", ["hands"], views, logits, contact, "smplx"
    )
    return InteractionResult("bottle", "human_contact", human, None, (vertices, faces), None, None, {})


def measure_overhead(repeats: int) -> dict[str, float]:
    import rclpy
    from ivlm_msgs.msg import HumanContact, InteractionEstimate
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CompressedImage, Image
    from visualization_msgs.msg import MarkerArray

    from ivlm_core.geometry.lifting import lift_human_soft
    from ivlm_core.model.processing import HumanRenderAssets
    from ivlm_core.testing.synthetic_body import write_synthetic_body_models
    from ivlm_ros.debug_image import compose_debug_image
    from ivlm_ros.image_conversion import compressed_msg_to_rgb, image_msg_to_rgb, rgb_to_image_fields
    from ivlm_ros.marker_cdr import encode_marker_array
    from ivlm_ros.markers import interaction_markers
    from ivlm_ros.messages import human_contact_msg, interaction_estimate_msg, make_header

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    image = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=photo.tobytes())
    image.header.frame_id = "camera_color_optical_frame"
    jpeg = io.BytesIO()
    from PIL import Image as PILImage

    PILImage.fromarray(photo).save(jpeg, format="JPEG", quality=90)
    compressed = CompressedImage(format="jpeg", data=jpeg.getvalue())

    with tempfile.TemporaryDirectory() as tmp:
        assets = HumanRenderAssets.render_vitruvian(write_synthetic_body_models(tmp), image_size=1024)
    logits_np = rng.normal(size=(4, 1024, 1024)).astype(np.float32)
    import torch

    logits = torch.from_numpy(logits_np)
    result = _full_size_result(rng, assets.renders, logits_np)
    header = make_header(image.header.stamp, image.header.frame_id)

    rclpy.init()
    pub_node, sub_node = rclpy.create_node("ivlm_bench_pub"), rclpy.create_node("ivlm_bench_sub")
    received = {"markers": 0}
    sub_node.create_subscription(
        MarkerArray, "bench/markers", lambda m: received.__setitem__("markers", 1), 5
    )
    sub_node.create_subscription(HumanContact, "bench/human", lambda m: None, 5)
    sub_node.create_subscription(InteractionEstimate, "bench/estimate", lambda m: None, 5)
    sub_node.create_subscription(Image, "bench/debug", lambda m: None, 5)
    executor = SingleThreadedExecutor()
    executor.add_node(sub_node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    pubs = {
        "markers": pub_node.create_publisher(MarkerArray, "bench/markers", 5),
        "human": pub_node.create_publisher(HumanContact, "bench/human", 5),
        "estimate": pub_node.create_publisher(InteractionEstimate, "bench/estimate", 5),
        "debug": pub_node.create_publisher(Image, "bench/debug", 5),
    }
    deadline = time.monotonic() + 10
    while any(p.get_subscription_count() == 0 for p in pubs.values()) and time.monotonic() < deadline:
        time.sleep(0.05)

    markers_raw = encode_marker_array(
        interaction_markers(result, 0.5, 0.5), 0, 0, "camera_color_optical_frame"
    )
    human_msg = human_contact_msg(header, "bottle", "bench", result.human, 0.5)
    estimate_msg = interaction_estimate_msg(header, result, "bench", 0.5, 0.5)
    debug_msg = Image(
        header=header, **rgb_to_image_fields(compose_debug_image(photo, result, None, 0.5, 0.5))
    )

    def publish_all() -> None:
        pubs["markers"].publish(markers_raw)
        pubs["human"].publish(human_msg)
        pubs["estimate"].publish(estimate_msg)
        pubs["debug"].publish(debug_msg)

    figures = {
        "decode_rgb8": _median_ms(lambda: image_msg_to_rgb(image), repeats),
        "decode_jpeg": _median_ms(lambda: compressed_msg_to_rgb(compressed), repeats),
        "lift": _median_ms(lambda: lift_human_soft(logits, assets.maps), repeats),
        "markers": _median_ms(
            lambda: encode_marker_array(
                interaction_markers(result, 0.5, 0.5), 0, 0, "camera_color_optical_frame"
            ),
            repeats,
        ),
        "messages": _median_ms(
            lambda: (
                human_contact_msg(header, "bottle", "bench", result.human, 0.5),
                interaction_estimate_msg(header, result, "bench", 0.5, 0.5),
            ),
            repeats,
        ),
        "debug_image": _median_ms(lambda: compose_debug_image(photo, result, None, 0.5, 0.5), repeats),
        "publish": _median_ms(publish_all, repeats),
    }
    stop.set()
    spinner.join(5.0)
    executor.shutdown()
    pub_node.destroy_node()
    sub_node.destroy_node()
    rclpy.try_shutdown()
    figures["marker_bytes"] = float(len(markers_raw))
    return figures


def measure_e2e(frames: int) -> float:
    """Median ms from publishing a frame to receiving its MarkerArray from the real node (tiny model)."""
    from ivlm_ros.testing.node_harness import NodeProcess, Probe, ensure_ros_test_env, sample_rgb, tiny_node_params

    ensure_ros_test_env()
    import rclpy

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        params = {**tiny_node_params(root), "publish_debug_image": True}
        node = NodeProcess(params, root / "node.log")
        rclpy.init()
        probe = Probe()
        try:
            probe.wait_status(lambda s: s["lifecycle_state"] == "active", 120, "the node to become active")
            probe.wait_matched(probe.image_pub)
            probe.wait_matched(probe.info_pub)
            rgb = sample_rgb(480)[:, :, :]
            latencies = []
            for i in range(frames + 1):  # the first frame warms up JIT/allocators and is not counted
                t0 = time.perf_counter()
                probe.publish_frame(rgb, 1000 + i)
                probe.wait_for(lambda i=i: probe.by_stamp("markers", 1000 + i), 60, f"markers of frame {i}")
                if i:
                    latencies.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(latencies)
        finally:
            probe.destroy()
            rclpy.try_shutdown()
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10, help="end-to-end frames (after one warm-up)")
    parser.add_argument("--repeats", type=int, default=20, help="repeats per overhead stage")
    args = parser.parse_args()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
    print(f"conditions: machine: {describe_machine()}; tiny random InteractVLM, synthetic SMPL-X, "
          f"repeats={args.repeats}")
    figures = measure_overhead(args.repeats)
    summed = ("decode_rgb8", "lift", "markers", "messages", "debug_image", "publish")
    for name, value in figures.items():
        unit = "bytes" if name == "marker_bytes" else "ms"
        print(
            f"{name:>12}: {value:10.2f} {unit}{'' if name in summed or unit == 'bytes' else '  (not summed)'}"
        )
    overhead = sum(figures[name] for name in summed)
    e2e = measure_e2e(args.frames)
    print(f"e2e (tiny model, {args.frames} frames, publish -> MarkerArray): {e2e:.1f} ms median")
    print(f"overhead_ms={overhead:.2f} e2e_ms={e2e:.2f}")


if __name__ == "__main__":
    main()
