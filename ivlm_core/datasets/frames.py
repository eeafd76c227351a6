"""Frames for `ivlm batch`: the photos of a folder, or the images of one topic of a rosbag2 (read with `rosbags`,
no ROS install needed), each with the object to ask about.

A frame that cannot be decoded is still yielded, with `error` set, so the caller counts and reports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ivlm_core.errors import InvalidInputError, IvlmError, MissingAssetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
QUERY_TYPE = "std_msgs/msg/String"


@dataclass
class Frame:
    stem: str  # output file stem
    source: str  # file path, or 'bag:<topic>#<index>'
    image: np.ndarray | None  # RGB uint8; None when it could not be read
    object_name: str | None  # None when unknown (the caller says why)
    stamp_ns: int | None = None  # header stamp of bag frames
    error: str | None = None


@dataclass
class FrameSource:
    """How many frames there are (for the progress bar) and the frames themselves, read lazily."""

    kind: str  # 'folder' | 'rosbag2'
    count: int
    frames: Iterator[Frame]


def read_image(path: Path) -> np.ndarray:
    """An RGB uint8 photo, or an error naming the file."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise MissingAssetError("input image", path, "Check the image path.")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise InvalidInputError(f"'{path}' is not a readable image: {err}") from None


def _object_from_name(name: str) -> str | None:
    label = name.split("__")[0].lower() if "__" in name else ""
    return label or None


def folder_frames(folder: Path, object_name: str | None = None) -> FrameSource:
    """Every photo in `folder` (sorted by name); the object is `object_name` or the `<object>__` file prefix."""
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InvalidInputError(f"no photos ({', '.join(IMAGE_SUFFIXES)}) in folder '{folder}'")

    def frames() -> Iterator[Frame]:
        for path in paths:
            name = object_name or _object_from_name(path.name)
            try:
                yield Frame(path.stem, str(path), read_image(path), name)
            except IvlmError as err:
                yield Frame(path.stem, str(path), None, name, error=str(err))

    return FrameSource("folder", len(paths), frames())


def is_rosbag2(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix in (".db3", ".mcap")


def _decode(msg: Any, msgtype: str) -> np.ndarray:
    # The node's decoder of ROS image encodings: plain numpy/PIL, shared so both accept the same images.
    from ivlm_ros.image_conversion import compressed_to_rgb, raw_image_to_rgb

    if msgtype.endswith("CompressedImage"):
        return compressed_to_rgb(msg.format, msg.data)
    return raw_image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)


def bag_frames(bag: Path, image_topic: str | None = None, query_topic: str | None = None,
               object_name: str | None = None) -> FrameSource:
    """The images of `image_topic` (default: the bag's only image topic) in time order.

    The object of each frame is `object_name`, else the latest std_msgs/String on `query_topic` recorded
    before the image.
    """
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    if not bag.exists():
        raise MissingAssetError("rosbag2", bag, "Pass the bag folder (with metadata.yaml) or its .db3/.mcap file.")
    typestore = get_typestore(Stores.ROS2_JAZZY)
    with Reader(bag) as reader:
        images = {c.topic: c for c in reader.connections if c.msgtype in IMAGE_TYPES}
        if image_topic is None:
            if len(images) != 1:
                raise InvalidInputError(
                    f"bag '{bag}' has {len(images)} image topics ({', '.join(sorted(images)) or 'none'}): "
                    "pick one with --image-topic")
            image_topic = next(iter(images))
        if image_topic not in images:
            raise InvalidInputError(
                f"bag '{bag}' has no image topic '{image_topic}'; its image topics: {', '.join(sorted(images))}")
        queries = [c for c in reader.connections if c.topic == query_topic] if query_topic else []
        if query_topic and (not queries or queries[0].msgtype != QUERY_TYPE):
            raise InvalidInputError(f"bag '{bag}' has no std_msgs/String topic '{query_topic}'")
        if object_name is None and not query_topic:
            raise InvalidInputError("bag frames need --object NAME or --query-topic TOPIC (std_msgs/String)")
        count = images[image_topic].msgcount

    def frames() -> Iterator[Frame]:
        latest_query = object_name
        index = 0
        with Reader(bag) as reader:
            wanted = [images_conn for images_conn in reader.connections
                      if images_conn.topic == image_topic or images_conn.topic == query_topic]
            for connection, _timestamp, raw in reader.messages(connections=wanted):
                if connection.topic == query_topic and connection.topic != image_topic:
                    if object_name is None:
                        latest_query = typestore.deserialize_cdr(raw, connection.msgtype).data.strip() or None
                    continue
                source = f"bag:{image_topic}#{index}"
                stem = f"frame_{index:06d}"
                index += 1
                try:
                    msg = typestore.deserialize_cdr(raw, connection.msgtype)
                    stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
                except Exception as err:  # a corrupt record is reported, not fatal
                    yield Frame(stem, source, None, latest_query, error=f"cannot deserialize: {err}")
                    continue
                try:
                    yield Frame(stem, source, _decode(msg, connection.msgtype), latest_query, stamp)
                except IvlmError as err:
                    yield Frame(stem, source, None, latest_query, stamp, error=str(err))

    return FrameSource("rosbag2", count, frames())
