"""Log interaction results to a Rerun recording (``.rrd``), one frame per image on the image-stamp timeline.

Rerun (optional extra ``rerun-sdk``, ``requirements-viz.txt``) is a real viewer that robotics teams use; a
``.rrd`` opens in ``rerun out.rrd`` or its web viewer. The world is the camera's optical frame (x right, y down,
z forward, ``RDF``), so the camera sits at the origin with its frustum drawn from the intrinsics:

- ``world/camera`` pinhole (frustum) and ``world/camera/image`` the photo;
- ``world/body`` the body mesh, per-vertex colours blended grey -> red by contact probability (the ``.glb``'s
  colours), ``world/body/contacts`` the vertices at or above the threshold;
- ``world/object`` the fitted object mesh, ``world/object/contacts`` its contact vertices.

Meshes that were not placed in the camera are logged where :func:`ivlm_core.viz.display.display_pose` puts
them (upright, in front of the camera), as the RViz markers do. Entities a frame lacks are cleared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ivlm_core.fitting.export import HUMAN_RGB, OBJECT_RGB, contact_colours
from ivlm_core.viz.display import display_pose

TIMELINE = "image_stamp"
HUMAN_CONTACT_RGB = (255, 26, 140)
OBJECT_CONTACT_RGB = (26, 230, 255)


def import_rerun() -> Any:
    try:
        import rerun
    except ImportError as exc:
        raise ImportError(
            "the Rerun output needs the optional rerun-sdk package: pip install -r requirements-viz.txt "
            "(or pip install 'rerun-sdk==0.41.0')"
        ) from exc
    return rerun


@dataclass
class ContactMesh:
    """A mesh in the camera frame with its per-vertex contact probabilities (None: no contact estimate)."""

    vertices: np.ndarray  # (N, 3) metres, camera optical frame
    faces: np.ndarray  # (F, 3)
    contact: np.ndarray | None = None  # (N,) in [0, 1]
    colours: np.ndarray | None = None  # (N, 3) uint8; None: grey -> red by contact (the .glb colours)


def meshes_of_result(result: Any, display_distance_m: float = 2.5) -> tuple[ContactMesh | None, ContactMesh | None]:
    """(body, object) of an ``InteractionResult``: placed meshes where fitted, else the display pose."""
    human_contact = result.human.vertex_contact if result.human is not None else None
    body = None
    placement = result.body_placement
    if placement is not None and placement.placed and placement.vertices is not None:
        body = ContactMesh(placement.vertices, placement.faces, human_contact)
    elif result.body_mesh is not None and human_contact is not None and len(result.body_mesh[0]) == len(human_contact):
        vertices, faces = result.body_mesh
        body = ContactMesh(display_pose(vertices, -0.5, display_distance_m), faces, human_contact)
    obj = None
    if result.object is not None:
        placed = result.object_placement
        if placed is not None and placed.placed and placed.vertices is not None:
            vertices = placed.vertices
        else:
            vertices = display_pose(result.object.vertices, 0.5, display_distance_m)
        obj = ContactMesh(vertices, result.object.faces, result.object.vertex_contact)
    return body, obj


class RerunRecording:
    """A ``.rrd`` file written as frames are logged; ``with RerunRecording(path) as rec: rec.log_frame(...)``."""

    def __init__(self, path: str | Path, application_id: str = "ivlm", threshold: float = 0.5) -> None:
        rr = self.rr = import_rerun()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.threshold = threshold
        self.frames = 0
        self.stream = rr.RecordingStream(application_id)
        self.stream.save(self.path, default_blueprint=self._blueprint())
        self.stream.log("world", rr.ViewCoordinates.RDF, static=True)

    def _blueprint(self) -> Any:
        """3D view of the camera frame beside the image, time panel paused on the image-stamp timeline."""
        rrb = self.rr.blueprint
        return rrb.Blueprint(
            rrb.Horizontal(
                rrb.Spatial3DView(origin="world", name="camera frame (3D)"),
                rrb.Spatial2DView(origin="world/camera", name="image"),
                column_shares=[3, 2],
            ),
            rrb.TimePanel(timeline=TIMELINE, play_state="paused"),
            collapse_panels=True,
        )

    def log_frame(
        self,
        stamp_ns: int,
        image_rgb: np.ndarray | None = None,
        camera_k: np.ndarray | None = None,
        body: ContactMesh | None = None,
        obj: ContactMesh | None = None,
        object_contact_points: np.ndarray | None = None,
    ) -> None:
        """One frame at ``stamp_ns`` (the source image's stamp) on the ``image_stamp`` timeline."""
        rr, log = self.rr, self.stream.log
        self.stream.set_time(TIMELINE, timestamp=np.datetime64(int(stamp_ns), "ns"))
        if image_rgb is not None:
            height, width = image_rgb.shape[:2]
            if camera_k is not None:
                log("world/camera", rr.Pinhole(image_from_camera=np.asarray(camera_k, dtype=np.float32),
                                               resolution=[width, height], camera_xyz=rr.ViewCoordinates.RDF,
                                               image_plane_distance=0.5))
            log("world/camera/image", rr.Image(np.ascontiguousarray(image_rgb)))
        self._log_mesh("world/body", body, HUMAN_RGB, HUMAN_CONTACT_RGB)
        self._log_mesh("world/object", obj, OBJECT_RGB, OBJECT_CONTACT_RGB, object_contact_points)
        self.frames += 1

    def log_result(self, stamp_ns: int, image_rgb: np.ndarray, camera_k: np.ndarray | None, result: Any,
                   display_distance_m: float = 2.5) -> None:
        """Log a pipeline ``InteractionResult`` for the image it was computed from."""
        body, obj = meshes_of_result(result, display_distance_m)
        self.log_frame(stamp_ns, image_rgb, camera_k, body, obj)

    def _log_mesh(self, path: str, mesh: ContactMesh | None, base_rgb: tuple[int, int, int],
                  contact_rgb: tuple[int, int, int], contact_points: np.ndarray | None = None) -> None:
        rr, log = self.rr, self.stream.log
        if mesh is None:
            log(path, rr.Clear(recursive=True))
            return
        vertices = np.asarray(mesh.vertices, dtype=np.float32)
        colours = mesh.colours if mesh.colours is not None else contact_colours(mesh.contact, len(vertices), base_rgb)
        log(path, rr.Mesh3D(vertex_positions=vertices, triangle_indices=np.asarray(mesh.faces, dtype=np.uint32),
                            vertex_colors=colours))
        if contact_points is None and mesh.contact is not None and len(mesh.contact) == len(vertices):
            contact_points = vertices[np.asarray(mesh.contact).reshape(-1) >= self.threshold]
        if contact_points is None or len(contact_points) == 0:
            log(f"{path}/contacts", rr.Clear(recursive=False))
        else:
            log(f"{path}/contacts", rr.Points3D(np.asarray(contact_points, dtype=np.float32), colors=contact_rgb,
                                               radii=0.008))

    def close(self) -> None:
        self.stream.flush()
        self.stream.disconnect()

    def __enter__(self) -> RerunRecording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
