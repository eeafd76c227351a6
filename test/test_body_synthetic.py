"""The synthetic body models: exact file layouts, humanoid geometry, determinism, transfer matrices."""

from __future__ import annotations

import pickle

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ivlm_core.testing.synthetic_body import (
    BODY_JOINT_NAMES,
    build_synthetic_model,
    write_synthetic_body_models,
    write_synthetic_smplh,
    write_synthetic_smplx,
    write_synthetic_transfer,
)

SMPLX_KEYS = {"v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights",
              "hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr", "lmk_faces_idx",
              "lmk_bary_coords", "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords"}


@pytest.fixture(scope="module")
def smplx_arrays() -> dict:
    return build_synthetic_model("smplx")


def test_smplx_file_has_every_key_smplx_reads(tmp_path, smplx_arrays) -> None:
    path = write_synthetic_smplx(tmp_path)
    assert path == tmp_path / "smplx" / "SMPLX_NEUTRAL.npz"
    with np.load(path, allow_pickle=False) as data:  # no pickled objects: loads with allow_pickle=False
        assert set(data.files) >= SMPLX_KEYS
        n = data["v_template"].shape[0]
        assert data["shapedirs"].shape == (n, 3, 400)  # 300 shape + 100 expression, as SMPL-X v1.1
        assert data["posedirs"].shape == (n, 3, 54 * 9)
        assert data["J_regressor"].shape == (55, n)
        assert data["weights"].shape == (n, 55)
        assert data["kintree_table"].shape == (2, 55)
        assert data["hands_componentsl"].shape == (45, 45)
        assert data["lmk_faces_idx"].shape == (51,)
        assert data["dynamic_lmk_faces_idx"].shape == (79, 17)
        assert data["dynamic_lmk_bary_coords"].shape == (79, 17, 3)
        np.testing.assert_allclose(data["weights"].sum(axis=1), 1.0, atol=1e-9)
        np.testing.assert_allclose(data["J_regressor"].sum(axis=1), 1.0, atol=1e-9)


def test_model_is_a_connected_humanoid(smplx_arrays) -> None:
    v, f = smplx_arrays["v_template"], smplx_arrays["f"].astype(np.int64)
    assert 500 <= len(v) <= 4000
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.6 < height < 1.9
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]]])
    graph = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(v), len(v)))
    assert connected_components(graph, directed=False)[0] == 1
    joints = smplx_arrays["J"]
    name = {n: i for i, n in enumerate(BODY_JOINT_NAMES)}
    assert joints[name["left_hip"], 0] > 0 > joints[name["right_hip"], 0]  # the body's left is +x
    heights = [joints[name[n], 1] for n in ("head", "neck", "pelvis", "left_knee", "left_ankle")]
    assert heights == sorted(heights, reverse=True)
    assert joints[name["left_wrist"], 0] > 0.6  # T-pose arms along x
    parents = smplx_arrays["kintree_table"][0]
    assert parents[0] == 4294967295 and parents[name["left_knee"]] == name["left_hip"]


def test_generation_is_deterministic(smplx_arrays) -> None:
    again = build_synthetic_model("smplx")
    for key, value in smplx_arrays.items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(again[key]), err_msg=key)
    assert not np.array_equal(build_synthetic_model("smplx", seed=1)["posedirs"], smplx_arrays["posedirs"])


def test_smplh_pkl_looks_like_the_python2_release(tmp_path) -> None:
    path = write_synthetic_smplh(tmp_path)
    assert path == tmp_path / "smplh" / "SMPLH_NEUTRAL.pkl"
    assert (tmp_path / "smplh" / "SMPLH_NEUTRAL.npz").is_file()
    raw = path.read_bytes()
    assert b"chumpy.ch" in raw and b"scipy.sparse" in raw
    with pytest.raises(ModuleNotFoundError):  # plain pickle needs chumpy, exactly like the official file
        pickle.loads(raw, encoding="latin1")
    plain = write_synthetic_smplh(tmp_path / "plain", formats=("pkl",), chumpy=False)
    data = pickle.loads(plain.read_bytes(), encoding="latin1")
    assert data["posedirs"].shape[2] == 51 * 9 and data["J_regressor"].shape[0] == 52
    assert sp.issparse(data["J_regressor"])


def test_transfer_from_counts_and_from_vertices(tmp_path) -> None:
    path = write_synthetic_transfer(tmp_path / "t.pkl", num_target=7, num_source=5)
    matrix = joblib.load(path)["matrix"]
    assert sp.issparse(matrix) and matrix.shape == (7, 5)
    np.testing.assert_allclose(np.asarray(matrix.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    src = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    tgt = np.array([[0.01, 0, 0], [0, 0.98, 0]])
    dense = joblib.load(write_synthetic_transfer(tmp_path / "d.pkl", target_vertices=tgt, source_vertices=src,
                                                 neighbours=1, dense=True))["matrix"]
    np.testing.assert_array_equal(dense, [[1, 0, 0], [0, 0, 1]])  # each target copies its nearest source
    with pytest.raises(ValueError):
        write_synthetic_transfer(tmp_path / "x.pkl", num_target=3)


def test_complete_body_model_dir(tmp_path) -> None:
    out = write_synthetic_body_models(tmp_path)
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"smplx/SMPLX_NEUTRAL.npz", "smplh/SMPLH_NEUTRAL.pkl", "smpl_to_smplx.pkl"} <= names
    matrix = joblib.load(out / "smpl_to_smplx.pkl")["matrix"]
    with np.load(out / "smplx" / "SMPLX_NEUTRAL.npz") as smplx_data, \
            np.load(out / "smplh" / "SMPLH_NEUTRAL.npz") as smplh_data:
        assert matrix.shape == (len(smplx_data["v_template"]), len(smplh_data["v_template"]))
        assert len(smplx_data["v_template"]) != len(smplh_data["v_template"])  # distinct topologies


def test_genders_differ_in_size(tmp_path) -> None:
    heights = {}
    for gender in ("female", "male"):
        path = write_synthetic_smplx(tmp_path, gender=gender)
        assert path.name == f"SMPLX_{gender.upper()}.npz"
        with np.load(path) as data:
            heights[gender] = np.ptp(data["v_template"][:, 1])
    assert heights["male"] > heights["female"]
    with pytest.raises(ValueError):
        build_synthetic_model("smplx", gender="other")
