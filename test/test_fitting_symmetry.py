import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from ivlm_core.errors import InvalidInputError
from ivlm_core.fitting.object_library import ObjectLibrary
from ivlm_core.fitting.symmetry import Symmetry, measure_symmetry


def _rot(axis, deg):
    return Rotation.from_rotvec(np.radians(deg) * np.asarray(axis, float)).as_matrix()


def test_axial_error_ignores_turns_about_the_axis_but_not_tilts():
    sym = Symmetry("axial", (0.0, 0.0, 1.0))
    base = _rot([1, 2, 3], 40)
    assert sym.rotation_error_deg(base, base @ _rot([0, 0, 1], 137)) == pytest.approx(0.0, abs=1e-4)
    assert sym.rotation_error_deg(base, base @ _rot([1, 0, 0], 30)) == pytest.approx(30.0, abs=1e-4)
    end_over_end = base @ _rot([1, 0, 0], 180)
    assert sym.rotation_error_deg(base, end_over_end) == pytest.approx(180.0, abs=1e-4)
    flip = Symmetry("axial", (0.0, 0.0, 1.0), flip=True)
    assert flip.rotation_error_deg(base, end_over_end) == pytest.approx(0.0, abs=1e-4)


def test_planar_mirrors_make_half_turn_twins():
    box = Symmetry("planar", planes=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
    assert len(box.rotations()) == 4  # identity + a half-turn about each axis
    base = _rot([0.3, -1, 0.2], 70)
    for axis in np.eye(3):
        assert box.rotation_error_deg(base, base @ _rot(axis, 180)) == pytest.approx(0.0, abs=1e-4)
    assert box.rotation_error_deg(base, base @ _rot([0, 0, 1], 90)) == pytest.approx(90.0, abs=1e-4)
    racket = Symmetry("planar", planes=((0.0, 0.0, 1.0), (1.0, 0.0, 0.0)))  # face plane + plane of the shaft
    assert racket.rotation_error_deg(base, base @ _rot([0, 1, 0], 180)) == pytest.approx(0.0, abs=1e-4)
    assert racket.rotation_error_deg(base, base @ _rot([1, 0, 0], 180)) == pytest.approx(180.0, abs=1e-4)
    mug = Symmetry("planar", planes=((0.0, 1.0, 0.0),))  # one mirror: no pose twin
    assert len(mug.rotations()) == 1
    assert Symmetry().rotation_error_deg(base, base @ _rot([0, 1, 0], 180)) == pytest.approx(180.0, abs=1e-4)


def test_symmetry_is_measured_from_the_mesh():
    box = trimesh.creation.box((0.16, 0.10, 0.06))
    measured = measure_symmetry(*trimesh.remesh.subdivide_to_size(box.vertices, box.faces, 0.01))
    assert measured.kind == "planar" and len(measured.rotations()) == 4 and measured.source == "measured"
    cylinder = trimesh.creation.cylinder(radius=0.03, height=0.2, sections=48)
    measured = measure_symmetry(cylinder.vertices, cylinder.faces)
    assert measured.kind == "axial" and measured.flip and abs(abs(measured.axis[2]) - 1.0) < 1e-3
    bump = trimesh.creation.box((0.04, 0.04, 0.04))
    bump.apply_translation((0.07, 0.04, 0.0))
    lopsided = trimesh.util.concatenate([box, bump])
    assert len(measure_symmetry(lopsided.vertices, lopsided.faces).rotations()) == 1


def test_library_symmetry_given_measured_or_rejected(tmp_path):
    trimesh.creation.cylinder(radius=30, height=200, sections=32).export(tmp_path / "can.ply")
    trimesh.creation.box((0.1, 0.2, 0.3)).export(tmp_path / "box.ply")
    library = ObjectLibrary.from_dict(
        {"can": {"mesh": "can.ply", "scale": 0.001, "symmetry": {"kind": "axial", "axis": [0, 0, 2], "flip": True}},
         "box": {"mesh": "box.ply"}, "plain": {"mesh": "box.ply", "symmetry": "none"}},
        base_dir=tmp_path,
    )
    can = library.get("can").symmetry
    assert can.kind == "axial" and can.source == "given" and can.axis == pytest.approx((0.0, 0.0, 1.0))
    assert np.allclose(can.centre, 0.0, atol=1e-6)  # the surface centroid, in metres
    assert library.get("box").symmetry.kind == "planar" and library.get("box").symmetry.source == "measured"
    assert library.get("plain").symmetry.kind == "none"
    with pytest.raises(InvalidInputError, match=r"'can'.*symmetry must be one of"):
        ObjectLibrary.from_dict({"can": {"mesh": "can.ply", "symmetry": "round"}}, base_dir=tmp_path)
    with pytest.raises(InvalidInputError, match="planes"):
        ObjectLibrary.from_dict({"can": {"mesh": "can.ply", "symmetry": {"kind": "planar"}}}, base_dir=tmp_path)
