"""Write the recorded test bag test/data/ivlm_sample_bag (rosbag2, sqlite3) from test/data/samples/*.png.

Each sample photo becomes one camera frame, 1 s apart, in the optical frame `camera_color_optical_frame`:
/camera/color/image_raw (rgb8), /camera/color/image_raw/compressed (jpeg), /camera/color/camera_info, and,
0.4 s before each frame, the object query parsed from the file name (`<object>__<what>.png`) on
/ivlm/object_query. Written with `rosbags` (no ROS install needed); re-run after changing the samples:

    python scripts/make_test_bag.py [--size 384]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "test" / "data" / "samples"
BAG = ROOT / "test" / "data" / "ivlm_sample_bag"
FRAME_ID = "camera_color_optical_frame"
START_NS = 1_700_000_000 * 10**9
PERIOD_NS = 10**9
QUERY_LEAD_NS = 400_000_000
HORIZONTAL_FOV_DEG = 60.0
TOPICS = {
    "image": "/camera/color/image_raw",
    "compressed": "/camera/color/image_raw/compressed",
    "camera_info": "/camera/color/camera_info",
    "query": "/ivlm/object_query",
}


def sample_frames(size: int) -> list[tuple[str, np.ndarray]]:
    """(object query, RGB uint8 size x size) per sample, sorted by file name."""
    frames = []
    for path in sorted(SAMPLES.glob("*__*.png")):
        with PILImage.open(path) as img:
            rgb = np.asarray(img.convert("RGB").resize((size, size), PILImage.BICUBIC), dtype=np.uint8)
        frames.append((path.name.split("__")[0].lower(), rgb))
    if not frames:
        raise SystemExit(f"no <object>__<what>.png samples in {SAMPLES}")
    return frames


def camera_k(width: int, height: int) -> list[float]:
    fx = 0.5 * width / np.tan(np.radians(HORIZONTAL_FOV_DEG) / 2.0)
    return [fx, 0.0, (width - 1) / 2.0, 0.0, fx, (height - 1) / 2.0, 0.0, 0.0, 1.0]


def write_bag(out: Path, size: int) -> dict:
    ts = get_typestore(Stores.ROS2_JAZZY)
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    Image, CompressedImage = ts.types["sensor_msgs/msg/Image"], ts.types["sensor_msgs/msg/CompressedImage"]
    CameraInfo, Roi = ts.types["sensor_msgs/msg/CameraInfo"], ts.types["sensor_msgs/msg/RegionOfInterest"]
    String = ts.types["std_msgs/msg/String"]
    if out.exists():
        shutil.rmtree(out)
    frames = sample_frames(size)
    manifest = {"frame_id": FRAME_ID, "topics": TOPICS, "frames": []}
    with Writer(out, version=8) as writer:
        conns = {
            "image": writer.add_connection(TOPICS["image"], Image.__msgtype__, typestore=ts),
            "compressed": writer.add_connection(
                TOPICS["compressed"], CompressedImage.__msgtype__, typestore=ts
            ),
            "camera_info": writer.add_connection(TOPICS["camera_info"], CameraInfo.__msgtype__, typestore=ts),
            "query": writer.add_connection(TOPICS["query"], String.__msgtype__, typestore=ts),
        }
        for i, (query, rgb) in enumerate(frames):
            stamp_ns = START_NS + (i + 1) * PERIOD_NS
            header = Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=FRAME_ID)
            height, width = rgb.shape[:2]
            writer.write(
                conns["query"],
                stamp_ns - QUERY_LEAD_NS,
                ts.serialize_cdr(String(data=query), String.__msgtype__),
            )
            k = camera_k(width, height)
            info = CameraInfo(
                header=header,
                height=height,
                width=width,
                distortion_model="plumb_bob",
                d=np.zeros(5),
                k=np.array(k),
                r=np.eye(3).reshape(-1),
                p=np.array([*k[:3], 0.0, *k[3:6], 0.0, 0.0, 0.0, 1.0, 0.0]),
                binning_x=0,
                binning_y=0,
                roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
            )
            writer.write(conns["camera_info"], stamp_ns, ts.serialize_cdr(info, CameraInfo.__msgtype__))
            image = Image(
                header=header,
                height=height,
                width=width,
                encoding="rgb8",
                is_bigendian=0,
                step=width * 3,
                data=rgb.reshape(-1),
            )
            writer.write(conns["image"], stamp_ns, ts.serialize_cdr(image, Image.__msgtype__))
            jpeg = io.BytesIO()
            PILImage.fromarray(rgb).save(jpeg, format="JPEG", quality=90)
            compressed = CompressedImage(
                header=header,
                format="rgb8; jpeg compressed rgb8",
                data=np.frombuffer(jpeg.getvalue(), np.uint8),
            )
            writer.write(
                conns["compressed"], stamp_ns, ts.serialize_cdr(compressed, CompressedImage.__msgtype__)
            )
            manifest["frames"].append(
                {
                    "stamp_sec": stamp_ns // 10**9,
                    "stamp_nanosec": stamp_ns % 10**9,
                    "object_query": query,
                    "width": width,
                    "height": height,
                }
            )
    (out / "frames.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384, help="frame width = height in pixels")
    parser.add_argument("--out", type=Path, default=BAG)
    args = parser.parse_args()
    manifest = write_bag(args.out, args.size)
    print(f"wrote {len(manifest['frames'])} frames to {args.out}")


if __name__ == "__main__":
    main()
