"""Where `ivlm predict`, `reconstruct` and `batch` put their results: one `FrameOutput` per photo or bag frame,
handed to every sink that `open_sinks` returns.

A new output (an MCAP recording, a Rerun `.rrd`, ...) is one more `OutputSink` built in `open_sinks` from its
command-line option (`add_sink_arguments`); the subcommands do not change.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass
class NamedMesh:
    """A per-vertex coloured mesh ('human', 'object', ...) in the frame's coordinates."""

    name: str
    vertices: np.ndarray  # (N, 3)
    faces: np.ndarray  # (F, 3)
    colours: np.ndarray  # (N, 3) uint8
    contact: np.ndarray | None = None  # (N,) contact probabilities behind the colours (recordings' contact points)


@dataclass
class FrameOutput:
    """Everything one frame produced, keyed by a suffix that names each product of the frame."""

    stem: str  # file stem of the frame (image stem, or frame_000012 for bag frames)
    stamp_ns: int | None = None  # source time (bag frames)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # suffix -> .npz arrays
    images: dict[str, np.ndarray] = field(default_factory=dict)  # suffix -> RGB uint8 (.png)
    meshes: dict[str, list[NamedMesh]] = field(default_factory=dict)  # suffix -> scene (.glb; .ply if one mesh)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)  # suffix -> JSON
    source_image: np.ndarray | None = None  # the input RGB photo / bag image (recordings show it)
    camera_k: np.ndarray | None = None  # (3, 3) when the meshes are placed in the camera frame (reconstruct)
    object_name: str | None = None


class OutputSink(Protocol):
    def write(self, frame: FrameOutput) -> dict[str, Path]:
        """Store one frame; returns {product: path} of what it wrote (may be empty)."""

    def close(self) -> dict[str, Path]:
        """Finish (flush recordings); returns files written only at the end."""


def _trimesh(mesh: NamedMesh) -> Any:
    import trimesh

    alpha = np.full((len(mesh.colours), 1), 255, dtype=np.uint8)
    return trimesh.Trimesh(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64),
                           vertex_colors=np.hstack((np.asarray(mesh.colours, np.uint8), alpha)), process=False)


class FileSink:
    """Files in one folder: `<stem>_<suffix>.npz/.png/.glb/.ply/.json` (vertex order of every mesh kept)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, frame: FrameOutput, suffix: str, ext: str) -> Path:
        return self.out_dir / f"{frame.stem}_{suffix}{ext}"

    def write(self, frame: FrameOutput) -> dict[str, Path]:
        import trimesh
        from PIL import Image

        written: dict[str, Path] = {}
        for suffix, arrays in frame.arrays.items():
            written[suffix] = self._path(frame, suffix, ".npz")
            np.savez_compressed(written[suffix], **arrays)
        for suffix, image in frame.images.items():
            written[suffix] = self._path(frame, suffix, ".png")
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(written[suffix])
        for suffix, meshes in frame.meshes.items():
            scene = trimesh.Scene()
            for mesh in meshes:
                scene.add_geometry(_trimesh(mesh), geom_name=mesh.name, node_name=mesh.name)
            written[f"{suffix}.glb"] = self._path(frame, suffix, ".glb")
            written[f"{suffix}.glb"].write_bytes(scene.export(file_type="glb"))
            if len(meshes) == 1:  # PLY holds one mesh
                written[f"{suffix}.ply"] = self._path(frame, suffix, ".ply")
                _trimesh(meshes[0]).export(written[f"{suffix}.ply"])
        for suffix, document in frame.documents.items():
            written[suffix] = self._path(frame, suffix, ".json")
            written[suffix].write_text(json.dumps(document, indent=2) + "\n")
        return written

    def close(self) -> dict[str, Path]:
        return {}


def add_sink_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the optional sinks (recordings next to the files in --out); add new sinks' options here."""
    parser.add_argument("--rerun", metavar="OUT.rrd", default=None,
                        help="also write a Rerun recording: photo, camera, contact-coloured meshes, contact points "
                             "(needs rerun-sdk: pip install -r requirements-viz.txt)")
    parser.add_argument("--mcap", metavar="BAG_DIR", default=None,
                        help="also write an MCAP rosbag2 (input image, view images, HumanContact/ObjectContact "
                             "with their definitions) at the frames' stamps")


def open_sinks(args: argparse.Namespace) -> list[OutputSink]:
    """The files in `--out`, plus every optional sink its option asks for. The one place sinks are chosen."""
    sinks: list[OutputSink] = [FileSink(args.out)]
    if getattr(args, "rerun", None):
        from ivlm_core.cli.recording_sinks import RerunSink

        sinks.append(RerunSink(Path(args.rerun)))
    if getattr(args, "mcap", None):
        from ivlm_core.cli.recording_sinks import McapSink

        sinks.append(McapSink(Path(args.mcap)))
    return sinks


def write_frame(sinks: list[OutputSink], frame: FrameOutput) -> dict[str, Path]:
    written: dict[str, Path] = {}
    for sink in sinks:
        written.update(sink.write(frame))
    return written


def close_sinks(sinks: list[OutputSink]) -> dict[str, Path]:
    written: dict[str, Path] = {}
    for sink in sinks:
        written.update(sink.close())
    return written
