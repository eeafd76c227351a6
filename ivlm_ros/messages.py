"""Pipeline results -> ivlm_msgs (HumanContact, ObjectContact, InteractionEstimate), the object PoseStamped
and DiagnosticArray; and the one input the other way: ivlm_msgs/SmplxParams -> SMPL-X parameter arrays.

All outputs carry the header of the *source* image (its stamp and optical frame), so a planner can associate
them with the frame they were computed from. Large arrays are converted with numpy/array buffers, never
element by element.
"""

from __future__ import annotations

import array
from collections.abc import Mapping
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseStamped
from ivlm_msgs.msg import (
    FitReport,
    HumanContact,
    InteractionEstimate,
    ObjectContact,
    SmplxParams,
    TrackedBodies,
    TrackedBody,
)
from rclpy.serialization import deserialize_message
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import RegionOfInterest
from shape_msgs.msg import Mesh
from std_msgs.msg import Header

from ivlm_core.user_text import escape_inline
from ivlm_ros.marker_cdr import CdrWriter
from ivlm_ros.message_cdr import write_mesh


def make_header(stamp: Time, frame_id: str) -> Header:
    return Header(stamp=Time(sec=stamp.sec, nanosec=stamp.nanosec), frame_id=frame_id)


def _float32_array(values: np.ndarray | None) -> array.array:
    out = array.array("f")
    if values is not None:
        out.frombytes(np.ascontiguousarray(values, dtype=np.float32).reshape(-1).tobytes())
    return out


def _uint32_array(values: np.ndarray) -> array.array:
    out = array.array("I")
    out.frombytes(np.ascontiguousarray(values, dtype=np.uint32).reshape(-1).tobytes())
    return out


def contact_vertex_ids(vertex_contact: np.ndarray | None, threshold: float) -> np.ndarray:
    """Ascending ids of the vertices at or above the threshold (the messages' contact_vertex_ids)."""
    if vertex_contact is None:
        return np.empty(0, dtype=np.uint32)
    return np.flatnonzero(np.asarray(vertex_contact) >= threshold).astype(np.uint32)


def mesh_msg(vertices: np.ndarray | None, faces: np.ndarray | None) -> Mesh:
    """shape_msgs/Mesh built from CDR bytes (rclpy fills the 10k Points/20k triangles in C, not Python)."""
    if vertices is None or faces is None:
        return Mesh()
    writer = CdrWriter()
    write_mesh(writer, vertices, faces)
    return deserialize_message(writer.getvalue(), Mesh)


def copy_stamp(stamp: Time | None) -> Time:
    """A copy of ``stamp`` (zero when None: "no contact yet")."""
    return Time() if stamp is None else Time(sec=stamp.sec, nanosec=stamp.nanosec)


def human_contact_msg(
    header: Header,
    object_query: str,
    model_id: str,
    human: Any | None,
    threshold: float,
    contact_stamp: Time | None = None,
    track_id: int = -1,
) -> HumanContact:
    """``contact_stamp`` = the stamp of the image the contact came from (the header's own when omitted)."""
    msg = HumanContact(header=header, object_query=object_query, model_id=model_id, track_id=int(track_id))
    msg.contact_stamp = copy_stamp(header.stamp if contact_stamp is None else contact_stamp)
    msg.contact_threshold = float(threshold)
    if human is None:
        return msg
    msg.contact_found = bool(human.contact_found)
    msg.answer_status = getattr(human, "answer_status", "") or ""
    msg.answer_message = getattr(human, "answer_message", "") or ""
    msg.body_model = human.body_model or ""
    msg.generated_text = human.generated_text or ""
    msg.body_parts = list(human.body_parts)
    if human.vertex_contact is not None:
        msg.vertex_contact = _float32_array(human.vertex_contact)
        msg.contact_vertex_ids = _uint32_array(contact_vertex_ids(human.vertex_contact, threshold))
    return msg


def object_contact_msg(
    header: Header,
    model_id: str,
    obj: Any | None,
    placement: Any | None,
    threshold: float,
    contact_stamp: Time | None = None,
    track_id: int = -1,
) -> ObjectContact:
    msg = ObjectContact(header=header, model_id=model_id, track_id=int(track_id))
    msg.contact_stamp = copy_stamp(header.stamp if contact_stamp is None else contact_stamp)
    msg.contact_threshold = float(threshold)
    if obj is None:
        return msg
    msg.object_label = obj.label
    msg.mesh_resource = (
        f"file://{obj.mesh_path}" if obj.mesh_path and "://" not in obj.mesh_path else obj.mesh_path
    )
    msg.contact_found = bool(obj.contact_found)
    msg.answer_status = getattr(obj, "answer_status", "") or ""
    msg.answer_message = getattr(obj, "answer_message", "") or ""
    msg.affordance = obj.affordance or ""
    msg.generated_text = obj.generated_text or ""
    if obj.vertex_contact is not None:
        ids = contact_vertex_ids(obj.vertex_contact, threshold)
        msg.vertex_contact = _float32_array(obj.vertex_contact)
        msg.contact_vertex_ids = _uint32_array(ids)
        if placement is not None and placement.placed and placement.vertices is not None:
            points = np.asarray(placement.vertices, dtype=np.float64)[ids]
            msg.contact_points = [Point(x=x, y=y, z=z) for x, y, z in points.tolist()]
    return msg


def smplx_params_msg(
    header: Header, params: Mapping[str, np.ndarray], gender: str = "neutral"
) -> SmplxParams:
    msg = SmplxParams(header=header, gender=gender)

    def flat(name: str) -> np.ndarray:
        value = params.get(name)
        return np.zeros(0, np.float32) if value is None else np.asarray(value, np.float32).reshape(-1)

    msg.betas = _float32_array(flat("betas"))
    msg.left_hand_pose = _float32_array(flat("left_hand_pose"))
    msg.right_hand_pose = _float32_array(flat("right_hand_pose"))
    msg.expression = _float32_array(flat("expression"))
    for name, size in (("global_orient", 3), ("body_pose", 63), ("jaw_pose", 3), ("transl", 3)):
        value = flat(name)
        if len(value) == size:
            setattr(msg, name, value)
    return msg


SMPLX_PARAM_FIELDS: tuple[str, ...] = (
    "betas",
    "global_orient",
    "body_pose",
    "left_hand_pose",
    "right_hand_pose",
    "jaw_pose",
    "expression",
    "transl",
)


def smplx_params_from_msg(msg: SmplxParams) -> dict[str, np.ndarray]:
    """The parameter fields of a SmplxParams as float32 vectors (the ``external_body`` mapping of the
    pipeline; empty hands/betas/expression stay empty and mean flat hands, mean shape, neutral face)."""
    return {name: np.asarray(getattr(msg, name), dtype=np.float32).reshape(-1) for name in SMPLX_PARAM_FIELDS}


def fit_report_msg(placement: Any | None) -> FitReport:
    msg = FitReport()
    if placement is None:
        return msg
    msg.success = bool(placement.placed)
    msg.message = placement.status or ""
    report: Mapping[str, float] = placement.report or {}
    msg.iterations = int(report.get("iterations", 0))
    msg.hypotheses = int(report.get("hypotheses", 0))
    msg.ambiguous = bool(report.get("ambiguous", 0.0))
    msg.contact_regions = int(report.get("contact_regions", 0))
    msg.contact_regions_touched = int(report.get("contact_regions_touched", 0))
    for name in (
        "fit_time_s",
        "loss_total",
        "loss_mask",
        "loss_centroid",
        "loss_contact",
        "loss_penetration",
        "contact_distance_m",
        "penetration_depth_m",
        "loss_gap",
        "runner_up_rotation_deg",
        "runner_up_translation_m",
    ):
        if name in report:
            setattr(msg, name, float(report[name]))
    return msg


def pose_msg(rotation: np.ndarray, translation: np.ndarray) -> Pose:
    pose = Pose()
    x, y, z = (float(v) for v in np.asarray(translation).reshape(3))
    pose.position.x, pose.position.y, pose.position.z = x, y, z
    qx, qy, qz, qw = Rotation.from_matrix(np.asarray(rotation, dtype=np.float64)).as_quat()
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (
        float(qx),
        float(qy),
        float(qz),
        float(qw),
    )
    return pose


def object_pose_stamped_msg(header: Header, placement: Any | None) -> PoseStamped | None:
    """The fitted object pose in the source image's frame, or None when the object was not placed."""
    if placement is None or not placement.placed:
        return None
    return PoseStamped(header=header, pose=pose_msg(placement.rotation, placement.translation))


def interaction_estimate_msg(
    header: Header,
    result: Any,
    model_id: str,
    human_threshold: float,
    object_threshold: float,
    contact_stamp: Time | None = None,
    track_id: int = -1,
    with_meshes: bool = True,
) -> InteractionEstimate:
    """The combined message; the human/object sub-messages carry the same header, contact stamp and track id.

    ``contact_stamp`` is the stamp of the image the contacts came from (omitted: the header's, as for a
    one-shot estimate); a zero ``Time()`` says no contact has arrived yet.
    """
    contact_stamp = header.stamp if contact_stamp is None else contact_stamp
    msg = InteractionEstimate(header=header, track_id=int(track_id), contact_stamp=copy_stamp(contact_stamp))
    msg.human = human_contact_msg(
        header, result.object_query, model_id, result.human, human_threshold, contact_stamp, track_id
    )
    msg.has_object_contact = result.object is not None
    msg.object = object_contact_msg(
        header, model_id, result.object, result.object_placement, object_threshold, contact_stamp, track_id
    )
    body = result.body_placement
    if body is not None:
        msg.human_placed = bool(body.placed)
        msg.human_placement_status = body.status or ""
        if body.placed:
            msg.human_params = smplx_params_msg(header, body.params or {})
            if with_meshes:
                msg.human_mesh = mesh_msg(body.vertices, body.faces)
    obj_place = result.object_placement
    if obj_place is not None:
        msg.object_placed = bool(obj_place.placed)
        msg.fit_report = fit_report_msg(obj_place)
        if obj_place.placed:
            msg.object_pose = pose_msg(obj_place.rotation, obj_place.translation)
            msg.object_scale = float(obj_place.scale)
            if result.object is not None and with_meshes:
                msg.object_mesh = mesh_msg(obj_place.vertices, result.object.faces)
    return msg


def interaction_estimate_cdr(
    header: Header,
    result: Any,
    model_id: str,
    human_threshold: float,
    object_threshold: float,
    contact_stamp: Time | None = None,
    track_id: int = -1,
) -> bytes:
    """:func:`interaction_estimate_msg` serialised, its meshes written from numpy (~1 ms instead of ~100 ms
    for an SMPL-X mesh as rclpy objects): what the camera-rate body loop publishes."""
    from ivlm_ros.message_cdr import encode_message

    msg = interaction_estimate_msg(
        header, result, model_id, human_threshold, object_threshold, contact_stamp, track_id, with_meshes=False
    )
    meshes: dict[str, tuple[Any, Any]] = {}
    body = result.body_placement
    if body is not None and body.placed:
        meshes["human_mesh"] = (body.vertices, body.faces)
    placed = result.object_placement
    if placed is not None and placed.placed and result.object is not None:
        meshes["object_mesh"] = (placed.vertices, result.object.faces)
    return encode_message(msg, meshes)


def roi_msg(box: Any) -> RegionOfInterest:
    """A pixel box (x0, y0, x1, y1; anything with those attributes or a 4-sequence) as a RegionOfInterest."""
    x0, y0, x1, y1 = (float(v) for v in (box if not hasattr(box, "x0") else (box.x0, box.y0, box.x1, box.y1)))
    left, top = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    right, bottom = max(left, int(np.ceil(x1))), max(top, int(np.ceil(y1)))
    return RegionOfInterest(x_offset=left, y_offset=top, width=right - left, height=bottom - top)


def box_from_roi(msg: RegionOfInterest) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) of a RegionOfInterest, or None for an empty one (width or height 0 = "clear")."""
    if msg.width == 0 or msg.height == 0:
        return None
    x, y = float(msg.x_offset), float(msg.y_offset)
    return x, y, x + msg.width, y + msg.height


def tracked_body_msg(
    header: Header, body: Any, contact_stamp: Time | None
) -> TrackedBody:
    """One ``ivlm_core.tracking.TrackedBody`` (track id, box, source, fitted SMPL-X) for one image."""
    placement = body.placement
    msg = TrackedBody(
        header=header,
        track_id=int(body.track_id),
        box=roi_msg(body.box),
        source=str(body.source),
        reinitialised=bool(body.reinitialised),
        missing_s=float(body.missing_s),
        placed=bool(placement.placed),
        status=placement.status or "",
        has_contact=contact_stamp is not None,
        contact_stamp=copy_stamp(contact_stamp),
    )
    if placement.placed:
        msg.params = smplx_params_msg(header, placement.params or {})
    return msg


def tracked_bodies_msg(
    header: Header, bodies: list[Any], status: str, contact_stamps: Mapping[int, Time | None]
) -> TrackedBodies:
    """Every tracked person of one image; ``contact_stamps`` maps a track id to its contact's image stamp."""
    return TrackedBodies(
        header=header,
        status=status,
        bodies=[tracked_body_msg(header, b, contact_stamps.get(int(b.track_id))) for b in bodies],
    )


def diagnostics_msg(
    stamp: Time, node_name: str, level: bytes, message: str, values: Mapping[str, Any], hardware_id: str
) -> DiagnosticArray:
    """One DiagnosticStatus named '<node>: model' (aggregator friendly) with the given key/values.

    The message and every string value are escaped (``repr``-style): queries, frame ids and error texts come
    from users, and an ANSI escape or ``\\r`` must not reach a terminal or a log viewer raw.
    """
    status = DiagnosticStatus(
        level=level,
        name=f"{node_name}: model",
        message=escape_inline(message, 1000),
        hardware_id=escape_inline(hardware_id or "unknown"),
    )
    status.values = [KeyValue(key=str(k), value=_format_value(v)) for k, v in values.items()]
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape_inline(value, 1000)
