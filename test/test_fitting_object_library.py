import numpy as np
import pytest
import trimesh

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.fitting.object_library import ObjectLibrary, load_object_mesh

# Two triangles whose shared corner is duplicated: process=True would merge vertices 2/3 and 1/4.
OBJ_WITH_DUPLICATES = """v 0 0 0
v 1 0 0
v 0 1 0
v 0 1 0
v 1 0 0
v 1 1 0
f 1 2 3
f 4 5 6
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_library_loads_with_scale_aliases_and_stored_vertex_order(tmp_path):
    (tmp_path / "meshes").mkdir()
    _write(tmp_path / "meshes", "plate.obj", OBJ_WITH_DUPLICATES)
    lib_path = _write(
        tmp_path, "objects.yaml",
        "objects:\n  Plate:\n    mesh: meshes/plate.obj\n    scale: 0.001\n    aliases: [dinner_plate]\n",
    )
    library = ObjectLibrary.load(lib_path)
    mesh = library.get("  dinner plate ")
    assert "plate" in library and library.labels == ["dinner plate", "plate"]
    assert mesh.vertices.shape == (6, 3)  # nothing merged: contact index i is vertex i
    assert np.allclose(mesh.vertices[5], [0.001, 0.001, 0.0])
    assert mesh.faces.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert library.get("PLATE") is mesh  # cached


def test_unknown_label_lists_the_known_ones(tmp_path):
    library = ObjectLibrary.from_dict({"cup": {"mesh": "cup.obj"}}, base_dir=tmp_path)
    with pytest.raises(InvalidInputError, match="known labels: cup"):
        library.get("racket")


def test_missing_files_and_bad_entries_raise_clear_errors(tmp_path):
    with pytest.raises(MissingAssetError, match="object library YAML"):
        ObjectLibrary.load(tmp_path / "nope.yaml")
    library = ObjectLibrary.from_dict({"cup": "cup.obj"}, base_dir=tmp_path)
    with pytest.raises(MissingAssetError, match=r"cup\.obj"):
        library.get("cup")
    with pytest.raises(InvalidInputError, match="scale"):
        ObjectLibrary.from_dict({"cup": {"mesh": "cup.obj", "scale": -1}})
    with pytest.raises(InvalidInputError, match="mesh"):
        ObjectLibrary.from_dict({"cup": {"scale": 1}})
    with pytest.raises(InvalidInputError):
        ObjectLibrary.from_dict({})


def test_empty_and_nan_meshes_are_rejected(tmp_path):
    points_only = _write(tmp_path, "points.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    with pytest.raises(InvalidInputError, match="triangle mesh"):
        load_object_mesh(points_only)
    nan_mesh = _write(tmp_path, "nan.obj", "v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(InvalidInputError, match="NaN"):
        load_object_mesh(nan_mesh)


def test_watertight_flag_for_closed_meshes(tmp_path):
    path = tmp_path / "box.ply"
    trimesh.creation.box((0.1, 0.2, 0.3)).export(path)
    mesh = load_object_mesh(path, 1.0, "box")
    assert mesh.watertight and mesh.vertex_normals.shape == mesh.vertices.shape
