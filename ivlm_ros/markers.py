"""MarkerArray content for an interaction estimate: contact-coloured meshes and contact-point spheres.

Everything is numpy (no per-vertex Python loops) and is serialised by :mod:`ivlm_ros.marker_cdr`, so a
full SMPL-X mesh (10475 vertices, 20908 faces) costs milliseconds per frame
(``python -m ivlm_ros.bench.node_overhead``).
Meshes that are not placed in the camera by fitting are shown in a fixed "display pose" in front of the camera
(REP-103 optical frame: x right, y down, z forward), so RViz with the camera frame as fixed frame shows them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ivlm_core.viz.display import display_pose
from ivlm_ros.marker_cdr import ADD, DELETE, SPHERE_LIST, TEXT_VIEW_FACING, TRIANGLE_LIST, MarkerData

# Perceptually ordered colour maps only (a rainbow like 'jet' hides where contact is strong).
COLORMAPS = ("viridis", "turbo", "inferno", "plasma", "magma", "cividis")
_LUT_SIZE = 256
_LUTS: dict[str, np.ndarray] = {}


def colormap_lut(name: str) -> np.ndarray:
    """(256, 3) float32 RGB table of a matplotlib colour map (sampled once, then one fancy-index per vertex)."""
    if name not in COLORMAPS:
        raise ValueError(f"unknown colour map '{name}'; choose one of {COLORMAPS}")
    if name not in _LUTS:
        from matplotlib import colormaps

        _LUTS[name] = colormaps[name](np.linspace(0.0, 1.0, _LUT_SIZE))[:, :3].astype(np.float32)
    return _LUTS[name]


HUMAN_CONTACT_RGBA = np.array([1.0, 0.1, 0.55, 1.0], dtype=np.float32)  # magenta: distinct from both maps
OBJECT_CONTACT_RGBA = np.array([0.1, 0.9, 1.0, 1.0], dtype=np.float32)  # cyan


def colormap_rgba(values: np.ndarray, name: str = "viridis", alpha: float = 1.0) -> np.ndarray:
    """Map values in [0, 1] to (N, 4) float32 RGBA with a perceptual colour map (NaN -> 0)."""
    lut = colormap_lut(name)
    v = np.nan_to_num(np.asarray(values, dtype=np.float32).reshape(-1), nan=0.0)
    idx = np.clip(np.rint(v * (len(lut) - 1)), 0, len(lut) - 1).astype(np.intp)
    rgba = np.empty((len(idx), 4), dtype=np.float32)
    rgba[:, :3] = lut[idx]
    rgba[:, 3] = alpha
    return rgba


def corner_colours(
    vertex_values: np.ndarray | None, faces: np.ndarray, colormap: str = "viridis", alpha: float = 1.0
) -> np.ndarray:
    """(3F, 4) float32 RGBA of every triangle corner: ``vertex_values`` through the colour map (grey when None)."""
    faces = np.asarray(faces, dtype=np.intp)
    if vertex_values is None:
        return np.tile(np.array([0.7, 0.7, 0.7, alpha], dtype=np.float32), (faces.size, 1))
    return colormap_rgba(vertex_values, colormap, alpha)[faces.reshape(-1)]


class CornerColourCache:
    """Remembers the corner colours of the last meshes, so an unchanged contact is not re-coloured per frame.

    The body loop re-publishes every person's mesh at camera rate, but a contact changes only at the VLM's rate;
    colouring and spreading it over the 62 724 corners of an SMPL-X TRIANGLE_LIST is ~0.8 ms a person a frame
    (``python -m ivlm_ros.bench.marker_encoding``). Entries are found by content (copies of the contact values and
    faces, compared in ~0.05 ms), so an array changed in place is never served stale; the colours handed out are
    read-only, as several frames' markers share them. Not thread-safe: one publisher (the node's body loop) owns it.
    """

    def __init__(self, max_entries: int = 16) -> None:
        self._max_entries = max_entries
        self._entries: list[tuple[np.ndarray | None, np.ndarray, str, float, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def corner_colours(
        self, vertex_values: np.ndarray | None, faces: np.ndarray, colormap: str = "viridis", alpha: float = 1.0
    ) -> np.ndarray:
        """:func:`corner_colours`, from the cache when the same values, faces, map and alpha were coloured."""
        values = None if vertex_values is None else np.asarray(vertex_values)
        faces = np.asarray(faces)
        for i, (known_values, known_faces, known_map, known_alpha, colours) in enumerate(self._entries):
            if (
                known_map == colormap
                and known_alpha == alpha
                and _same(known_values, values)
                and _same(known_faces, faces)
            ):
                self._entries.append(self._entries.pop(i))  # most recently used last
                return colours
        colours = corner_colours(values, faces, colormap, alpha)
        colours.flags.writeable = False
        kept_values = None if values is None else values.copy()
        self._entries.append((kept_values, faces.copy(), colormap, alpha, colours))
        del self._entries[: -self._max_entries]
        return colours


def _same(known: np.ndarray | None, new: np.ndarray | None) -> bool:
    if known is None or new is None:
        return known is None and new is None
    return known.shape == new.shape and known.dtype == new.dtype and bool(np.array_equal(known, new))


def contact_mesh_marker(
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_values: np.ndarray | None,
    ns: str,
    marker_id: int,
    colormap: str = "viridis",
    alpha: float = 1.0,
    colour_cache: CornerColourCache | None = None,
) -> MarkerData:
    """TRIANGLE_LIST of the mesh with per-vertex colours from ``vertex_values`` (grey when None)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {faces.shape}")
    if vertex_values is not None and len(vertex_values) != len(vertices):
        raise ValueError(f"{len(vertex_values)} contact values for a mesh of {len(vertices)} vertices")
    if colour_cache is None:
        colours = corner_colours(vertex_values, faces, colormap, alpha)
    else:
        colours = colour_cache.corner_colours(vertex_values, faces, colormap, alpha)
    return MarkerData(
        ns=ns,
        id=marker_id,
        type=TRIANGLE_LIST,
        scale=np.ones(3),
        color=np.array([1.0, 1.0, 1.0, alpha], dtype=np.float32),
        points=vertices[faces.reshape(-1).astype(np.intp, copy=False)],
        colors=colours,
    )


def contact_points_marker(
    points: np.ndarray, ns: str, marker_id: int, rgba: np.ndarray, radius_m: float
) -> MarkerData:
    """SPHERE_LIST at the given points; DELETE when there are none (RViz keeps nothing stale)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0:
        return MarkerData(ns=ns, id=marker_id, type=SPHERE_LIST, action=DELETE)
    return MarkerData(
        ns=ns,
        id=marker_id,
        type=SPHERE_LIST,
        action=ADD,
        scale=np.full(3, 2.0 * radius_m),
        color=np.asarray(rgba, dtype=np.float32),
        points=points,
    )


def label_marker(text: str, above: np.ndarray, ns: str, marker_id: int, height_m: float = 0.08) -> MarkerData:
    """TEXT_VIEW_FACING a little above the given mesh (optical frame: 'up' is -y)."""
    above = np.asarray(above, dtype=np.float64).reshape(-1, 3)
    top = np.array([above[:, 0].mean(), above[:, 1].min() - 1.5 * height_m, above[:, 2].mean()])
    return MarkerData(
        ns=ns,
        id=marker_id,
        type=TEXT_VIEW_FACING,
        position=top,
        scale=np.array([0.0, 0.0, height_m]),
        color=np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32),
        text=text,
    )


def _subsample(ids: np.ndarray, max_count: int) -> np.ndarray:
    if len(ids) <= max_count:
        return ids
    return ids[np.linspace(0, len(ids) - 1, max_count).astype(np.intp)]


def interaction_markers(
    result: Any,
    human_threshold: float,
    object_threshold: float,
    colormap: str = "viridis",
    sphere_radius_m: float = 0.01,
    display_distance_m: float = 2.5,
    max_spheres: int = 2000,
    ns_prefix: str = "",
    colour_cache: CornerColourCache | None = None,
) -> list[MarkerData]:
    """Markers for an ``ivlm_core.pipeline.InteractionResult``: body and object meshes + contact spheres.

    Ids are fixed per namespace, so each frame replaces the previous one. Fitted meshes
    (``*_placement.placed``) are drawn where they were fitted in the camera frame, others in the display pose.
    ``ns_prefix`` puts every namespace under one person (:func:`person_namespace`), so several people show at
    once and each can be hidden in RViz. ``colour_cache`` keeps the mesh colours of unchanged contacts between
    calls (the node's body loop passes its own).
    """
    markers: list[MarkerData] = []
    human = result.human
    body_vertices = body_faces = None
    placement = getattr(result, "body_placement", None)
    if placement is not None and placement.placed and placement.vertices is not None:
        body_vertices, body_faces = np.asarray(placement.vertices), np.asarray(placement.faces)
    elif result.body_mesh is not None:
        body_vertices = display_pose(result.body_mesh[0], -0.5, display_distance_m)
        body_faces = np.asarray(result.body_mesh[1])
    if body_vertices is not None and body_faces is not None:
        contact = None if human is None else human.vertex_contact
        if contact is not None and len(contact) != len(body_vertices):
            contact = None  # a body-model mismatch must not hide the mesh; messages.py reports the values
        markers.append(
            contact_mesh_marker(
                body_vertices, body_faces, contact, ns_prefix + "human_mesh", 0, colormap, colour_cache=colour_cache
            )
        )
        ids = np.empty(0, np.intp) if contact is None else np.flatnonzero(contact >= human_threshold)
        markers.append(
            contact_points_marker(
                body_vertices[_subsample(ids, max_spheres)],
                ns_prefix + "human_contact",
                0,
                HUMAN_CONTACT_RGBA,
                sphere_radius_m,
            )
        )
        if human is not None:
            parts = ", ".join(human.body_parts) if human.body_parts else ""
            found = parts or ("contact" if human.contact_found else "no contact found")
            markers.append(label_marker(f"{result.object_query}: {found}", body_vertices, ns_prefix + "human_label", 0))
    obj = result.object
    if obj is not None and obj.vertices is not None and len(obj.vertices):
        obj_placement = getattr(result, "object_placement", None)
        if obj_placement is not None and obj_placement.placed and obj_placement.vertices is not None:
            obj_vertices = np.asarray(obj_placement.vertices, dtype=np.float64)
        else:
            obj_vertices = display_pose(obj.vertices, 0.5, display_distance_m)
        contact = obj.vertex_contact
        if contact is not None and len(contact) != len(obj_vertices):
            contact = None
        markers.append(
            contact_mesh_marker(
                obj_vertices, obj.faces, contact, ns_prefix + "object_mesh", 0, colormap, colour_cache=colour_cache
            )
        )
        ids = np.empty(0, np.intp) if contact is None else np.flatnonzero(contact >= object_threshold)
        markers.append(
            contact_points_marker(
                obj_vertices[_subsample(ids, max_spheres)],
                ns_prefix + "object_contact",
                0,
                OBJECT_CONTACT_RGBA,
                sphere_radius_m,
            )
        )
    return markers


def person_namespace(track_id: int) -> str:
    """Marker namespace prefix of one tracked person: ``person_<id>/`` (``person_3/human_mesh``)."""
    return f"person_{int(track_id)}/"


class StaleMarkers:
    """Remembers the (ns, id) markers published last time and deletes those a new frame no longer has.

    Per-person namespaces come and go with the tracks; without an explicit DELETE RViz would keep drawing a
    person who left. Not thread-safe: one publisher (the node's body loop) owns it.
    """

    def __init__(self) -> None:
        self._shown: set[tuple[str, int]] = set()

    def with_deletes(self, markers: list[MarkerData]) -> list[MarkerData]:
        """``markers`` plus a DELETE for every marker shown before and absent now."""
        current = {(m.ns, m.id) for m in markers if m.action != DELETE}
        gone = sorted(self._shown - current)
        self._shown = current
        return markers + [MarkerData(ns=ns, id=marker_id, type=TRIANGLE_LIST, action=DELETE) for ns, marker_id in gone]
