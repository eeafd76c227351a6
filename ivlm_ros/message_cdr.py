"""Serialise any ROS message to CDR bytes in Python, with large meshes given as numpy arrays.

Why: a ``shape_msgs/Mesh`` in an rclpy message is one Python object per vertex and per triangle; building and
serialising the SMPL-X mesh that way costs tens of milliseconds (rclpy converts each object), too much for the
node's camera-rate body loop. Here the message's small fields are walked through rosidl's own field list
(``get_fields_and_field_types``, so the layout follows the .msg files), and chosen Mesh fields are written
straight from (vertices, faces) arrays. ``rclpy`` publishers accept the bytes as a serialised message.
Layout: XCDR1 little endian, the encoding rmw_fastrtps and rmw_cyclonedds use (see :mod:`ivlm_ros.marker_cdr`);
tests compare the bytes with ``rclpy.serialization.serialize_message``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ivlm_ros.marker_cdr import CdrWriter

# ROS IDL primitive -> numpy little-endian dtype (its size is the CDR alignment).
_PRIMITIVES: dict[str, str] = {
    "boolean": "<u1", "octet": "<u1", "byte": "<u1", "char": "<u1", "uint8": "<u1", "int8": "<i1",
    "int16": "<i2", "uint16": "<u2", "int32": "<i4", "uint32": "<u4", "int64": "<i8", "uint64": "<u8",
    "float": "<f4", "double": "<f8",
}  # fmt: skip
_SEQUENCE = re.compile(r"^sequence<(.+?)(?:, ?\d+)?>$")
_ARRAY = re.compile(r"^(.+)\[(\d+)\]$")

MeshArrays = tuple[np.ndarray | None, np.ndarray | None]  # (vertices (N, 3), faces (F, 3))


def encode_message(msg: Any, meshes: Mapping[str, MeshArrays] | None = None) -> bytes:
    """CDR bytes of ``msg``; ``meshes`` maps a top-level ``shape_msgs/Mesh`` field name to (vertices, faces)
    written in place of that field's (then ignored) content."""
    writer = CdrWriter()
    _write_message(writer, msg, meshes or {})
    return writer.getvalue()


def write_mesh(writer: CdrWriter, vertices: np.ndarray | None, faces: np.ndarray | None) -> None:
    """A ``shape_msgs/Mesh`` (triangles: uint32[3] each, then vertices: geometry_msgs/Point = 3 float64)."""
    if vertices is None or faces is None:
        writer.uint32(0)
        writer.uint32(0)
        return
    faces_u32 = np.asarray(faces).reshape(-1, 3)
    writer.uint32(len(faces_u32))
    if len(faces_u32):
        writer.array(faces_u32, "<u4")
    points = np.asarray(vertices).reshape(-1, 3)
    writer.uint32(len(points))
    if len(points):
        writer.float64s(points)


def _write_message(writer: CdrWriter, msg: Any, meshes: Mapping[str, MeshArrays]) -> None:
    for name, kind in msg.get_fields_and_field_types().items():
        if name in meshes:
            write_mesh(writer, *meshes[name])
        else:
            _write_value(writer, kind, getattr(msg, name))


def _write_value(writer: CdrWriter, kind: str, value: Any) -> None:
    if kind in _PRIMITIVES:
        dtype = np.dtype(_PRIMITIVES[kind])
        writer.raw(np.asarray(value, dtype=dtype).tobytes(), dtype.itemsize)
    elif kind == "string" or kind.startswith("string<="):
        writer.string(value)
    elif (match := _SEQUENCE.match(kind)) is not None:
        writer.uint32(len(value))
        _write_elements(writer, match.group(1), value)
    elif (match := _ARRAY.match(kind)) is not None:
        _write_elements(writer, match.group(1), value)
    else:  # a nested message
        _write_message(writer, value, {})


def _write_elements(writer: CdrWriter, kind: str, values: Any) -> None:
    if not len(values):
        return  # an empty sequence has no element alignment
    if kind in _PRIMITIVES:
        writer.array(values, _PRIMITIVES[kind])
        return
    for value in values:
        _write_value(writer, kind, value)
