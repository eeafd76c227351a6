"""Crafted data files of every kind ivlm reads must never run code (issue 10, item 1).

Each payload, if unpickled, opens (creates) a marker file; the tests check the loader refuses the file with a
message naming it, or skips the pickled entry, and that the marker never appears.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest

from ivlm_core.body.models import load_body_model, load_model_arrays
from ivlm_core.body.transfer import ContactTransfer
from ivlm_core.errors import InvalidInputError
from ivlm_core.geometry.lifting import LiftingMaps
from ivlm_core.safe_pickle import load_pickle
from ivlm_core.testing.synthetic_body import write_synthetic_body_models

MATRIX = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]])


class _CreatesMarker:
    """Unpickling this calls builtins.open(marker, 'w'): the file appears iff code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "code_ran.marker"
    yield path
    assert not path.exists(), "a crafted data file executed code"


@pytest.fixture(scope="module")
def body_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_body_models(tmp_path_factory.mktemp("safe_body"))


def test_transfer_pickle_with_a_payload_is_refused_naming_the_file(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "smpl_to_smplx.pkl"
    path.write_bytes(pickle.dumps({"matrix": MATRIX, "extra": _CreatesMarker(marker)}, protocol=2))
    with pytest.raises(InvalidInputError, match="refusing") as info:
        ContactTransfer.load(tmp_path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("bz2", 3), ("xz", 3)])
def test_transfer_joblib_files_load_and_payloads_in_them_are_refused(
    tmp_path: Path, marker: Path, compress
) -> None:
    good = tmp_path / "good" / "smpl_to_smplx.pkl"
    good.parent.mkdir()
    joblib.dump({"matrix": MATRIX.astype(np.float32)}, good, compress=compress)
    np.testing.assert_allclose(ContactTransfer.load(good).matrix.toarray(), MATRIX)
    fortran = tmp_path / "fortran.pkl"
    joblib.dump({"matrix": np.asfortranarray(MATRIX)}, fortran, compress=compress)
    np.testing.assert_allclose(load_pickle(fortran)["matrix"], MATRIX)
    evil = tmp_path / "evil" / "smpl_to_smplx.pkl"
    evil.parent.mkdir()
    joblib.dump({"matrix": MATRIX, "extra": _CreatesMarker(marker)}, evil, compress=compress)
    with pytest.raises(InvalidInputError, match="refusing") as info:
        ContactTransfer.load(evil)
    assert str(evil) in str(info.value)


def test_joblib_object_arrays_are_refused(tmp_path: Path, marker: Path) -> None:
    """joblib stores an object array as a nested plain pickle: it must not be read at all."""
    path = tmp_path / "smpl_to_smplx.pkl"
    payload = np.empty(1, dtype=object)
    payload[0] = _CreatesMarker(marker)
    joblib.dump({"matrix": payload}, path)
    with pytest.raises(InvalidInputError, match="object array"):
        ContactTransfer.load(path)


def test_lift2d_pickle_payload_is_refused(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "lift2d_dict.pkl"
    joblib.dump({"pixel_to_vertices_map": [], "bary_coords_map": [], "num_vertices": _CreatesMarker(marker)}, path)
    with pytest.raises(InvalidInputError, match="refusing"):
        LiftingMaps.from_lift2d_pkl(path)


def _npz_with(source: Path, target: Path, **replace: object) -> Path:
    with np.load(source, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    for key, value in replace.items():
        holder = np.empty((), dtype=object)
        holder[()] = value
        arrays[key] = holder
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, **arrays)  # object arrays are pickled inside the .npy
    return target


@pytest.mark.parametrize(("kind", "stem"), [("smplx", "SMPLX_NEUTRAL"), ("smplh", "SMPLH_NEUTRAL")])
def test_body_npz_with_a_pickled_needed_entry_is_refused(
    body_dir: Path, tmp_path: Path, marker: Path, kind: str, stem: str
) -> None:
    path = _npz_with(body_dir / kind / f"{stem}.npz", tmp_path / kind / f"{stem}.npz",
                     v_template=_CreatesMarker(marker))
    with pytest.raises(InvalidInputError, match="v_template") as info:
        load_body_model(path, kind)
    assert str(path) in str(info.value) and "pickled" in str(info.value)


@pytest.mark.parametrize(("kind", "stem"), [("smplx", "SMPLX_NEUTRAL"), ("smplh", "SMPLH_NEUTRAL")])
def test_body_npz_pickled_extra_entries_are_skipped_unread(
    body_dir: Path, tmp_path: Path, marker: Path, kind: str, stem: str
) -> None:
    """Releases that carry an unused pickled dict (e.g. joint2num) still load; the pickle is never opened."""
    path = _npz_with(body_dir / kind / f"{stem}.npz", tmp_path / kind / f"{stem}.npz",
                     joint2num=_CreatesMarker(marker))
    model = load_body_model(path, kind)
    assert model.get_num_verts() > 0
    assert "joint2num" not in load_model_arrays(path)


def test_chumpy_body_pickle_with_a_payload_is_refused(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "SMPLH_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({"v_template": _CreatesMarker(marker)}, protocol=2))
    with pytest.raises(InvalidInputError, match="refusing") as info:
        load_body_model(path, "smplh")
    assert str(path) in str(info.value)
