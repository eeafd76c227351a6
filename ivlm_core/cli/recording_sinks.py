"""Recording sinks of the `ivlm` command, fed the same `FrameOutput` as the files in `--out`:

- `--rerun OUT.rrd`: a Rerun recording (`ivlm_core.viz.rerun_log`): the photo, the camera frustum when the meshes
  are placed in the camera (`reconstruct`), every mesh with its colours and contact points;
- `--mcap BAG_DIR`: an MCAP rosbag2 (`ivlm_core.mcap_writer`, definitions inside): the input image, the view /
  overlay images and `ivlm_msgs/HumanContact` / `ObjectContact` per frame.

A frame sits at its source time: a bag image's header stamp (`ivlm batch` on a rosbag2); photos have none, so
they take 0, 1, 2, ... ns in order. Frames without an image or mesh (e.g. reconstruct's fit-report document) are
not recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

Frame = Any  # an ivlm_core.cli.outputs.FrameOutput (not imported: outputs.open_sinks imports this module)
FRAME_ID = "camera_color_optical_frame"  # photos carry no frame id: the REP-103 optical frame name
CONTACT_THRESHOLD = 0.5


def _has_content(frame: Frame) -> bool:
    return frame.source_image is not None or bool(frame.meshes) or bool(frame.images)


class RerunSink:
    """One Rerun frame per `FrameOutput`."""

    def __init__(self, path: Path) -> None:
        from ivlm_core.viz.rerun_log import RerunRecording

        self.path = Path(path)
        self.recording = RerunRecording(self.path, threshold=CONTACT_THRESHOLD)

    def write(self, frame: Frame) -> dict[str, Path]:
        from ivlm_core.viz.display import display_pose
        from ivlm_core.viz.rerun_log import ContactMesh

        if not _has_content(frame):
            return {}
        placed = frame.camera_k is not None  # reconstruct places its meshes in the camera frame
        meshes: dict[str, ContactMesh] = {}
        for scene in frame.meshes.values():
            for mesh in scene:
                offset = -0.5 if mesh.name == "human" else 0.5  # beside each other, as the RViz markers
                vertices = mesh.vertices if placed else display_pose(mesh.vertices, offset, 2.5)
                meshes[mesh.name] = ContactMesh(vertices, mesh.faces, mesh.contact, colours=mesh.colours)
        stamp = frame.stamp_ns if frame.stamp_ns is not None else self.recording.frames
        self.recording.log_frame(int(stamp), frame.source_image, frame.camera_k, meshes.get("human"),
                                 meshes.get("object"))
        return {}

    def close(self) -> dict[str, Path]:
        self.recording.close()
        return {"rerun": self.path}


class McapSink:
    """An MCAP rosbag2 of the frames, readable by Foxglove, Lichtblick, `ros2 bag play` and rosbags."""

    def __init__(self, path: Path) -> None:
        from ivlm_core.mcap_writer import McapBagWriter

        self.bag = McapBagWriter(path)
        self.types = self.bag.typestore.types
        self.frames = 0

    def _header(self, stamp_ns: int) -> Any:
        stamp = self.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        return self.types["std_msgs/msg/Header"](stamp=stamp, frame_id=FRAME_ID)

    def _image(self, topic: str, stamp_ns: int, rgb: np.ndarray) -> None:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        msg = self.types["sensor_msgs/msg/Image"](
            header=self._header(stamp_ns), height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
            is_bigendian=0, step=rgb.shape[1] * 3, data=rgb.reshape(-1))
        self.bag.write_message(topic, "sensor_msgs/msg/Image", stamp_ns, msg)

    def _contact(self, name: str, stamp_ns: int, contact: np.ndarray, frame: Frame) -> None:
        contact = np.asarray(contact, dtype=np.float32).reshape(-1)
        ids = np.flatnonzero(contact >= CONTACT_THRESHOLD).astype(np.uint32)
        header = self._header(stamp_ns)
        common = {"header": header, "contact_stamp": header.stamp, "track_id": -1, "model_id": "",
                  "contact_found": True, "answer_status": "contact", "answer_message": "",
                  "vertex_contact": contact, "contact_threshold": CONTACT_THRESHOLD, "contact_vertex_ids": ids,
                  "generated_text": ""}
        if name == "human":
            msgtype = "ivlm_msgs/msg/HumanContact"
            msg = self.types[msgtype](object_query=frame.object_name or "", body_model="smplx", body_parts=[],
                                      **common)
        else:
            msgtype = "ivlm_msgs/msg/ObjectContact"
            msg = self.types[msgtype](object_label=frame.object_name or "", mesh_resource="", contact_points=[],
                                      affordance="", **common)
        self.bag.write_message(f"/ivlm/{name}_contact", msgtype, stamp_ns, msg)

    def write(self, frame: Frame) -> dict[str, Path]:
        if not _has_content(frame):
            return {}
        stamp_ns = int(frame.stamp_ns) if frame.stamp_ns is not None else self.frames
        self.frames += 1
        if frame.source_image is not None:
            self._image("/camera/color/image_raw", stamp_ns, frame.source_image)
        for suffix, image in frame.images.items():
            self._image(f"/ivlm/{suffix}", stamp_ns, image)
        for scene in frame.meshes.values():
            for mesh in scene:
                if mesh.contact is not None and mesh.name in ("human", "object"):
                    self._contact(mesh.name, stamp_ns, mesh.contact, frame)
        return {}

    def close(self) -> dict[str, Path]:
        self.bag.close()
        return {"mcap": self.bag.mcap_file()}
