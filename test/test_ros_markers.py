"""Marker building (counts, colours, shapes) and the vectorised MarkerArray CDR encoding, read by rclpy."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from ivlm_ros.marker_cdr import (
    ADD,
    DELETE,
    SPHERE_LIST,
    TEXT_VIEW_FACING,
    TRIANGLE_LIST,
    MarkerData,
    encode_marker_array,
)
from ivlm_ros.markers import (
    HUMAN_CONTACT_RGBA,
    colormap_rgba,
    contact_mesh_marker,
    contact_points_marker,
    display_pose,
    interaction_markers,
)

pytestmark = pytest.mark.ros


def _decode(raw: bytes):
    from rclpy.serialization import deserialize_message
    from visualization_msgs.msg import MarkerArray

    return deserialize_message(raw, MarkerArray)


def _tetra() -> tuple[np.ndarray, np.ndarray]:
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]], dtype=np.int64)
    return vertices, faces


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("viridis", (0.267, 0.005, 0.329), (0.993, 0.906, 0.144)),
        ("turbo", (0.190, 0.072, 0.232), (0.480, 0.016, 0.011)),
    ],
)
def test_colormap_endpoints_match_the_published_maps(name: str, low: tuple, high: tuple) -> None:
    rgba = colormap_rgba(np.array([0.0, 1.0]), name, alpha=0.5)
    np.testing.assert_allclose(rgba[0, :3], low, atol=0.005)
    np.testing.assert_allclose(rgba[1, :3], high, atol=0.005)
    assert rgba.dtype == np.float32 and np.all(rgba[:, 3] == 0.5)


def test_viridis_is_perceptually_ordered_not_a_single_hue() -> None:
    rgba = colormap_rgba(np.linspace(0, 1, 11))
    luminance = rgba[:, :3] @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(luminance) > 0)  # monotone lightness
    assert rgba[:, 2].max() - rgba[:, 2].min() > 0.3 and rgba[:, 1].max() - rgba[:, 1].min() > 0.5
    with pytest.raises(ValueError, match="unknown colour map"):
        colormap_rgba(np.zeros(2), "jet")


def test_nan_and_out_of_range_values_are_clamped() -> None:
    rgba = colormap_rgba(np.array([np.nan, -1.0, 2.0]))
    np.testing.assert_array_equal(rgba[0], colormap_rgba(np.array([0.0]))[0])
    np.testing.assert_array_equal(rgba[2], colormap_rgba(np.array([1.0]))[0])


def test_mesh_marker_is_a_triangle_list_with_per_vertex_colours() -> None:
    vertices, faces = _tetra()
    contact = np.array([0.0, 1.0, 0.5, 0.25])
    marker = contact_mesh_marker(vertices, faces, contact, "human_mesh", 0)
    assert marker.type == TRIANGLE_LIST and marker.points.shape == (12, 3) and marker.colors.shape == (12, 4)
    np.testing.assert_array_equal(marker.points, vertices[faces.reshape(-1)])
    per_vertex = colormap_rgba(contact)
    np.testing.assert_array_equal(marker.colors, per_vertex[faces.reshape(-1)])
    grey = contact_mesh_marker(vertices, faces, None, "m", 1)
    assert np.all(grey.colors[:, :3] == np.float32(0.7))
    with pytest.raises(ValueError, match="4 vertices"):
        contact_mesh_marker(vertices, faces, np.zeros(3), "m", 0)


def test_sphere_list_and_delete_when_empty() -> None:
    marker = contact_points_marker(np.ones((5, 3)), "c", 0, HUMAN_CONTACT_RGBA, 0.02)
    assert marker.type == SPHERE_LIST and marker.action == ADD and len(marker.points) == 5
    np.testing.assert_allclose(marker.scale, [0.04, 0.04, 0.04])
    empty = contact_points_marker(np.zeros((0, 3)), "c", 0, HUMAN_CONTACT_RGBA, 0.02)
    assert empty.action == DELETE


def test_display_pose_puts_a_y_up_body_upright_in_front_of_an_optical_camera() -> None:
    vertices = np.array([[0.0, 0.0, 0.0], [0.0, 1.7, 0.1]])  # feet, head (y up, nose towards +z)
    posed = display_pose(vertices, -0.5, 2.5)
    assert posed[1, 1] < posed[0, 1]  # head above feet: smaller y in the y-down optical frame
    assert posed[1, 2] < posed[0, 2]  # the face (+z canonical) turns towards the camera
    np.testing.assert_allclose(posed.mean(axis=0), [-0.5, 0.0, 2.5])


def test_cdr_encoding_reads_back_field_for_field() -> None:
    rng = np.random.default_rng(1)
    points, colors = rng.random((7, 3)), rng.random((7, 4)).astype(np.float32)
    markers = [
        MarkerData(
            ns="body", id=3, type=TRIANGLE_LIST, points=points[:6], colors=colors[:6], lifetime_s=1.25
        ),
        MarkerData(ns="spheres", id=0, type=SPHERE_LIST, points=points, scale=np.full(3, 0.02), text="é"),
        MarkerData(ns="gone", id=9, type=SPHERE_LIST, action=DELETE),
    ]
    decoded = _decode(encode_marker_array(markers, 1700000000, 123456789, "camera_color_optical_frame"))
    assert len(decoded.markers) == 3
    for sent, got in zip(markers, decoded.markers):
        assert got.header.stamp.sec == 1700000000 and got.header.stamp.nanosec == 123456789
        assert got.header.frame_id == "camera_color_optical_frame"
        assert (got.ns, got.id, got.type, got.action, got.text) == (
            sent.ns,
            sent.id,
            sent.type,
            sent.action,
            sent.text,
        )
        assert got.pose.orientation.w == 1.0 and got.scale.x == sent.scale[0]
        got_points = np.array([[p.x, p.y, p.z] for p in got.points]).reshape(-1, 3)
        np.testing.assert_array_equal(got_points, np.zeros((0, 3)) if sent.points is None else sent.points)
        got_colors = np.array([[c.r, c.g, c.b, c.a] for c in got.colors], dtype=np.float32).reshape(-1, 4)
        expected_colors = np.zeros((0, 4)) if sent.colors is None else sent.colors
        np.testing.assert_array_equal(got_colors, expected_colors)
    assert decoded.markers[0].lifetime.sec == 1 and decoded.markers[0].lifetime.nanosec == 250_000_000


def test_cdr_encoding_equals_rclpy_serialisation_up_to_padding() -> None:
    from rclpy.serialization import serialize_message

    marker = MarkerData(ns="n", id=1, type=TRIANGLE_LIST, points=np.ones((3, 3)), colors=np.ones((3, 4)))
    raw = encode_marker_array([marker], 5, 6, "f")
    again = serialize_message(_decode(raw))
    assert len(again) == len(raw)
    # rclpy leaves alignment padding uninitialised; everything else must be identical.
    differing = [i for i, (a, b) in enumerate(zip(raw, again)) if a != b]
    assert all(raw[i] == 0 for i in differing)


def _marker_msg(m: MarkerData, sec: int, nanosec: int, frame_id: str):
    """The rclpy Marker a MarkerData stands for, built field by field (the generic encoder's input)."""
    from builtin_interfaces.msg import Duration
    from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
    from std_msgs.msg import ColorRGBA, Header
    from visualization_msgs.msg import Marker

    x, y, z = map(float, m.position)
    qx, qy, qz, qw = map(float, m.orientation_xyzw)
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    points = [] if m.points is None else m.points
    colors = [] if m.colors is None else m.colors
    return Marker(
        header=header, ns=m.ns, id=m.id, type=m.type, action=m.action,
        pose=Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw)),
        scale=Vector3(x=float(m.scale[0]), y=float(m.scale[1]), z=float(m.scale[2])),
        color=ColorRGBA(r=float(m.color[0]), g=float(m.color[1]), b=float(m.color[2]), a=float(m.color[3])),
        lifetime=Duration(sec=int(m.lifetime_s), nanosec=round((m.lifetime_s % 1) * 1e9)),
        frame_locked=m.frame_locked, text=m.text,
        points=[Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in points],
        colors=[ColorRGBA(r=float(c[0]), g=float(c[1]), b=float(c[2]), a=float(c[3])) for c in colors],
    )  # fmt: skip


def test_cdr_encoding_equals_the_generic_message_encoder_byte_for_byte() -> None:
    """marker_cdr is a hand-laid, faster copy of message_cdr's field walk (its docstring says why): the generic
    encoder, which follows the .msg files, must give the very same bytes, padding included."""
    from visualization_msgs.msg import MarkerArray

    from ivlm_ros.message_cdr import encode_message

    rng = np.random.default_rng(2)
    markers = [
        MarkerData(ns="a/mesh", id=0, type=TRIANGLE_LIST, points=rng.random((9, 3)),
                   colors=rng.random((9, 4)).astype(np.float32), lifetime_s=1.5, frame_locked=True),
        MarkerData(ns="b", id=7, type=TEXT_VIEW_FACING, position=np.array([0.1, -2.0, 3.0]), text="mug é",
                   orientation_xyzw=np.array([0.0, 0.6, 0.0, 0.8]), scale=np.array([0.1, 0.2, 0.3])),
        MarkerData(ns="c", id=1, type=SPHERE_LIST, action=DELETE),
    ]  # fmt: skip
    stamp = (1700000000, 987654321, "camera_color_optical_frame")
    generic = encode_message(MarkerArray(markers=[_marker_msg(m, *stamp) for m in markers]))
    assert encode_marker_array(markers, *stamp) == generic


def test_interaction_markers_from_a_pipeline_result() -> None:
    vertices, faces = _tetra()
    human = SimpleNamespace(
        vertex_contact=np.array([0.9, 0.1, 0.6, 0.2], dtype=np.float32),
        body_parts=["hands"],
        contact_found=True,
    )
    obj = SimpleNamespace(vertices=vertices * 0.1, faces=faces, vertex_contact=np.array([0.0, 0.0, 0.0, 0.8]))
    result = SimpleNamespace(
        object_query="bottle",
        human=human,
        body_mesh=(vertices, faces),
        body_placement=None,
        object=obj,
        object_placement=SimpleNamespace(placed=True, vertices=vertices + 5.0),
    )
    markers = interaction_markers(result, 0.5, 0.5, "turbo", sphere_radius_m=0.03)
    by_ns = {m.ns: m for m in markers}
    assert set(by_ns) == {"human_mesh", "human_contact", "human_label", "object_mesh", "object_contact"}
    label = by_ns["human_label"]
    assert label.type == TEXT_VIEW_FACING and label.text == "bottle: hands"
    assert label.position[1] < display_pose(vertices, -0.5, 2.5)[:, 1].min()  # above the head (y is down)
    assert len(by_ns["human_mesh"].points) == 12
    np.testing.assert_allclose(by_ns["human_contact"].points, display_pose(vertices, -0.5, 2.5)[[0, 2]])
    np.testing.assert_allclose(by_ns["object_contact"].points, (vertices + 5.0)[[3]])  # fitted: camera frame
    np.testing.assert_array_equal(
        by_ns["object_mesh"].colors, colormap_rgba(obj.vertex_contact, "turbo")[faces.ravel()]
    )
    # no contact above threshold -> the sphere marker is deleted, the mesh stays
    human.vertex_contact = np.zeros(4, np.float32)
    again = {m.ns: m for m in interaction_markers(result, 0.5, 0.5)}
    assert again["human_contact"].action == DELETE and again["human_mesh"].action == ADD


def _three_people_markers() -> list[MarkerData]:
    """The body loop's MarkerArray for three tracked people (fitted bodies in person_<id>/ namespaces), one of
    them with no contact (a DELETE), plus the stale-marker DELETE of a person who left."""
    from ivlm_ros.markers import StaleMarkers, person_namespace

    rng = np.random.default_rng(3)
    stale = StaleMarkers()
    stale.with_deletes([MarkerData(ns=person_namespace(9) + "human_mesh", id=0, type=TRIANGLE_LIST)])
    markers: list[MarkerData] = []
    for track_id, contact_scale in ((1, 1.0), (4, 1.0), (7, 0.0)):
        vertices = rng.normal(size=(30, 3)).astype(np.float32)  # float32, as a fit returns them
        faces = rng.integers(0, 30, size=(40, 3))
        human = SimpleNamespace(
            vertex_contact=rng.random(30).astype(np.float32) * contact_scale, body_parts=["hands"], contact_found=True
        )
        result = SimpleNamespace(
            object_query="mug",
            human=human,
            body_mesh=None,
            body_placement=SimpleNamespace(placed=True, vertices=vertices, faces=faces),
            object=None,
        )
        markers += interaction_markers(result, 0.5, 0.5, ns_prefix=person_namespace(track_id))
    return stale.with_deletes(markers)


def test_three_people_marker_array_equals_the_generic_message_encoder_byte_for_byte() -> None:
    """The multi-person MarkerArray the node publishes (several large point/colour arrays, each kept as a view
    until the one final join) is byte for byte what message_cdr writes for the equivalent rclpy message."""
    from visualization_msgs.msg import MarkerArray

    from ivlm_ros.message_cdr import encode_message

    markers = _three_people_markers()
    assert len(markers) == 10 and sum(m.action == DELETE for m in markers) == 2
    stamp = (1700000001, 5, "camera_color_optical_frame")
    raw = encode_marker_array(markers, *stamp)
    assert raw == encode_message(MarkerArray(markers=[_marker_msg(m, *stamp) for m in markers]))
    assert [m.ns for m in _decode(raw).markers] == [m.ns for m in markers]


def test_cdr_encoding_does_not_depend_on_the_memory_layout_of_the_arrays() -> None:
    """Strided, Fortran-order, float32 and big-endian inputs give the bytes of their packed little-endian copy."""
    rng = np.random.default_rng(4)
    points = rng.random((8, 6))[:, ::2]  # a strided view
    colors = np.asfortranarray(rng.random((8, 4)).astype(">f4"))
    packed = MarkerData(
        ns="m", id=0, type=TRIANGLE_LIST, points=np.array(points, "<f8", order="C"),
        colors=np.array(colors, "<f4", order="C"),
    )  # fmt: skip
    odd = MarkerData(ns="m", id=0, type=TRIANGLE_LIST, points=points, colors=colors)
    assert encode_marker_array([odd], 1, 2, "f") == encode_marker_array([packed], 1, 2, "f")
    as_float32 = MarkerData(ns="m", id=0, type=SPHERE_LIST, points=np.float32(0.5) * np.ones((3, 3), np.float32))
    as_float64 = MarkerData(ns="m", id=0, type=SPHERE_LIST, points=np.full((3, 3), 0.5))
    assert encode_marker_array([as_float32], 1, 2, "f") == encode_marker_array([as_float64], 1, 2, "f")


def test_corner_colour_cache_gives_the_uncached_colours_and_never_stale_ones() -> None:
    from ivlm_ros.markers import CornerColourCache

    vertices, faces = _tetra()
    contact = np.array([0.0, 1.0, 0.5, 0.25], dtype=np.float32)
    cache = CornerColourCache(max_entries=2)
    plain = contact_mesh_marker(vertices, faces, contact, "m", 0, "turbo")
    first = contact_mesh_marker(vertices, faces, contact, "m", 0, "turbo", colour_cache=cache)
    again = contact_mesh_marker(vertices + 1.0, faces, contact, "m", 0, "turbo", colour_cache=cache)
    assert encode_marker_array([first], 1, 2, "f") == encode_marker_array([plain], 1, 2, "f")
    assert again.colors is first.colors and not first.colors.flags.writeable  # shared, so read-only
    np.testing.assert_array_equal(again.points, (vertices + 1.0)[faces.reshape(-1)])  # points are per call
    contact[1] = 0.0  # changed in place: found by content, so re-coloured
    np.testing.assert_array_equal(
        contact_mesh_marker(vertices, faces, contact, "m", 0, "turbo", colour_cache=cache).colors,
        colormap_rgba(contact, "turbo")[faces.reshape(-1)],
    )
    variants = (("viridis", 1.0, faces), ("turbo", 0.5, faces), ("turbo", 1.0, faces[::-1]))
    for other_map, other_alpha, other_faces in variants:
        cached = contact_mesh_marker(vertices, other_faces, contact, "m", 0, other_map, other_alpha, colour_cache=cache)
        uncached = contact_mesh_marker(vertices, other_faces, contact, "m", 0, other_map, other_alpha)
        np.testing.assert_array_equal(cached.colors, uncached.colors)
    grey = contact_mesh_marker(vertices, faces, None, "m", 0, colour_cache=cache)
    np.testing.assert_array_equal(grey.colors, contact_mesh_marker(vertices, faces, None, "m", 0).colors)
    assert len(cache) == 2  # bounded
