"""User object-mesh library: a YAML map from an object label to a mesh file and its metric scale.

The contact model predicts one probability per mesh vertex, so the mesh must be loaded exactly as stored:
``trimesh.load(..., process=False)`` keeps the vertex order (the reference's ``process=True`` merges and
reorders vertices and so mis-assigns contacts, spec 8.2). The file format is::

    objects:                      # (the top-level 'objects:' key is optional)
      bottle:
        mesh: meshes/bottle.obj   # relative to the YAML file's folder, or absolute
        scale: 0.001              # mesh units -> metres (here millimetres); default 1.0
        aliases: [water bottle]   # optional extra labels
        symmetry: measure         # none | axial | planar | measure (the default), see below

``symmetry`` makes pose errors and the fit's ambiguity report ignore poses that look the same. ``measure``
(or no key) finds it from the mesh (:func:`ivlm_core.fitting.symmetry.measure_symmetry`); a given one is a
kind name or a map ``{kind: axial, axis: [0, 0, 1], flip: true}`` / ``{kind: planar, planes: [[1, 0, 0]]}``
with directions in the mesh file's frame and an optional ``centre`` in file units (default: the surface
centroid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh
import yaml

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.fitting.symmetry import NO_SYMMETRY, Symmetry, measure_symmetry
from ivlm_core.geometry.raster import checked_vertices


@dataclass(frozen=True)
class ObjectMesh:
    """A metric object mesh in its own frame; vertex i carries contact probability i."""

    label: str
    path: str
    vertices: np.ndarray  # (M,3) float32, metres (file coordinates times scale)
    faces: np.ndarray  # (K,3) int64
    scale: float
    watertight: bool = False
    symmetry: Symmetry = NO_SYMMETRY  # poses that look the same (object frame, metres)

    @property
    def vertex_normals(self) -> np.ndarray:
        """(M,3) float32 area-weighted unit vertex normals (computed without touching the vertex order)."""
        mesh = trimesh.Trimesh(self.vertices, self.faces, process=False, validate=False)
        return np.asarray(mesh.vertex_normals, dtype=np.float32)


def load_object_mesh(
    path: str | Path, scale: float = 1.0, label: str = "", symmetry: object = "measure"
) -> ObjectMesh:
    """Load a triangle mesh with its stored vertex order and check it is usable for fitting.

    symmetry: "measure" (find it from the mesh), or a kind / map as in the library YAML (file units)."""
    path = Path(path)
    if not path.is_file():
        raise MissingAssetError(
            f"object mesh for '{label or path.stem}'", path,
            "Check the 'mesh' entry in the object library YAML (relative paths start at the YAML's folder).",
        )
    if not np.isfinite(scale) or scale <= 0:
        raise InvalidInputError(f"object '{label}': scale (mesh units -> metres) must be > 0, got {scale}")
    try:
        mesh = trimesh.load(str(path), process=False, force="mesh")
    except Exception as exc:  # trimesh raises many types for unreadable files
        raise InvalidInputError(f"object mesh '{path}' could not be read by trimesh: {exc}") from exc
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64)
    if len(vertices) == 0 or len(faces) == 0:
        raise InvalidInputError(
            f"object mesh '{path}' has {len(vertices)} vertices and {len(faces)} faces; a triangle mesh is "
            "needed (point clouds cannot be fitted to a silhouette)."
        )
    vertices = checked_vertices(vertices, f"object mesh '{path}': vertices", "repair the file")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise InvalidInputError(f"object mesh '{path}' has face indices outside [0, {len(vertices)}).")
    metric = (vertices * float(scale)).astype(np.float32)
    return ObjectMesh(
        label=label or path.stem,
        path=str(path),
        vertices=metric,
        faces=faces,
        scale=float(scale),
        watertight=bool(mesh.is_watertight),
        symmetry=_symmetry(symmetry, metric, faces, float(scale), label or path.stem),
    )


def _symmetry(spec: object, vertices: np.ndarray, faces: np.ndarray, scale: float, label: str) -> Symmetry:
    """The entry's symmetry in metres: measured, or given (a given one without a centre gets the surface
    centroid, which lies on every symmetry element of a symmetric mesh)."""
    if spec is None or spec == "measure":
        return measure_symmetry(vertices, faces)
    try:
        given = Symmetry.from_dict(spec, source="given")
    except InvalidInputError as exc:
        raise InvalidInputError(f"object '{label}': {exc}") from exc
    if isinstance(spec, dict) and "centre" in spec:
        return given.scaled(scale)
    mesh = trimesh.Trimesh(vertices, faces, process=False, validate=False)
    centre = tuple(float(c) for c in (mesh.triangles_center * mesh.area_faces[:, None]).sum(0) / mesh.area)
    return Symmetry(given.kind, given.axis, given.flip, given.planes, centre, "given")


@dataclass
class ObjectLibrary:
    """Normalised label or alias -> (canonical label, mesh path, scale); meshes load lazily, cached per label."""

    entries: dict[str, tuple[str, Path, float]]
    source: str = ""
    symmetries: dict[str, object] = field(default_factory=dict)  # canonical label -> YAML spec ("measure")
    _cache: dict[str, ObjectMesh] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, yaml_path: str | Path) -> ObjectLibrary:
        yaml_path = Path(yaml_path)
        if not yaml_path.is_file():
            raise MissingAssetError(
                "object library YAML", yaml_path,
                "Write a YAML map 'objects: {label: {mesh: file.obj, scale: 1.0}}' and pass its path "
                "(PipelineConfig.object_library / the 'object_library' parameter).",
            )
        try:
            data = yaml.safe_load(yaml_path.read_text())
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"object library '{yaml_path}' is not valid YAML: {exc}") from exc
        return cls.from_dict(data, base_dir=yaml_path.parent, source=str(yaml_path))

    @classmethod
    def from_dict(cls, data: object, base_dir: str | Path = ".", source: str = "<dict>") -> ObjectLibrary:
        if isinstance(data, dict) and "objects" in data:
            data = data["objects"]
        if not isinstance(data, dict) or not data:
            raise InvalidInputError(f"object library {source}: expected a non-empty map label -> mesh/scale.")
        entries: dict[str, tuple[str, Path, float]] = {}
        symmetries: dict[str, object] = {}
        for label, spec in data.items():
            if isinstance(spec, str):
                spec = {"mesh": spec}
            if not isinstance(spec, dict) or "mesh" not in spec:
                raise InvalidInputError(f"object library {source}: entry '{label}' needs a 'mesh' path.")
            mesh_path = Path(str(spec["mesh"])).expanduser()
            if not mesh_path.is_absolute():
                mesh_path = Path(base_dir) / mesh_path
            try:
                scale = float(spec.get("scale", 1.0))
            except (TypeError, ValueError) as exc:
                msg = f"object library {source}: '{label}' scale must be a number."
                raise InvalidInputError(msg) from exc
            if not np.isfinite(scale) or scale <= 0:
                raise InvalidInputError(f"object library {source}: '{label}' scale must be > 0, got {scale}.")
            symmetry = spec.get("symmetry", "measure")
            if symmetry != "measure":
                try:
                    Symmetry.from_dict(symmetry)  # fail at load time, not at the first query
                except InvalidInputError as exc:
                    raise InvalidInputError(f"object library {source}: '{label}': {exc}") from exc
            symmetries[_normalise(str(label))] = symmetry
            for name in [label, *spec.get("aliases", [])]:
                entries[_normalise(str(name))] = (_normalise(str(label)), mesh_path, scale)
        return cls(entries=entries, source=source, symmetries=symmetries)

    @property
    def labels(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, label: str) -> bool:
        return _normalise(label) in self.entries

    def get(self, label: str) -> ObjectMesh:
        """The mesh for a label (case/space-insensitive); InvalidInputError names the known labels."""
        key = _normalise(label)
        if key not in self.entries:
            raise InvalidInputError(
                f"object '{label}' is not in the object library {self.source}; known labels: "
                f"{', '.join(self.labels)}. Add it to the YAML with its mesh file and metric scale."
            )
        label, mesh_path, scale = self.entries[key]
        if label not in self._cache:
            symmetry = self.symmetries.get(label, "measure")
            self._cache[label] = load_object_mesh(mesh_path, scale, label=label, symmetry=symmetry)
        return self._cache[label]


    def load_all(self) -> list[ObjectMesh]:
        """Load and check every mesh now (at configure), so a bad file is an error naming it at start-up
        instead of a failure on the first query for that object."""
        return [self.get(label) for label in sorted({label for label, _, _ in self.entries.values()})]


def _normalise(label: str) -> str:
    return " ".join(label.strip().lower().replace("_", " ").split())
