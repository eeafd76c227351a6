"""Externally supplied bodies: the reference's OSX npz layout and SMPL-X parameters (dict / flat array)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.fitting.body_fit import CameraBodyPlacer, load_body_layer
from ivlm_core.fitting.external_body import (
    SMPLX_PARAM_LAYOUT,
    body_from_smplx_params,
    load_osx_npz,
    osx_camera_matrix,
    parse_smplx_params,
    place_from_params,
    place_osx_body,
)


@pytest.fixture(scope="module")
def body_dir(tmp_path_factory: pytest.TempPathFactory):
    from ivlm_core.testing.synthetic_body import write_synthetic_smplx

    root = tmp_path_factory.mktemp("external_body_models")
    write_synthetic_smplx(root)
    return root


@pytest.fixture(scope="module")
def layer(body_dir):
    return load_body_layer(body_dir)


def _project(vertices: np.ndarray, k: np.ndarray) -> np.ndarray:
    return vertices[:, :2] / vertices[:, 2:3] * np.diag(k)[:2] + k[:2, 2]


def _osx_file(tmp_path, layer, bbox=(100.0, 40.0, 150.0, 200.0)):
    """An OSX-style result: the body at the depth OSX's 5000 px virtual focal length puts it."""
    with torch.no_grad():
        mesh = layer({"global_orient": torch.tensor([[np.pi, 0.0, 0.0]]), "transl": torch.tensor([[0.0, 0.0, 0.0]])})
    vertices = mesh.vertices[0].numpy()
    vertices = vertices - vertices.mean(axis=0) + np.array([0.05, 0.02, 38.0])  # OSX bodies sit ~40 m away
    path = tmp_path / "osx_human2.npz"
    np.savez(
        path,
        smpl_vertices=vertices[None].astype(np.float32),
        smpl_faces=layer.faces.astype(np.int32),
        bbox_2=np.array([bbox], dtype=np.float32),
        extra=np.zeros(2),
    )
    return path, vertices


def test_osx_camera_matrix_follows_the_reference_formula():
    k = osx_camera_matrix([10.0, 20.0, 192.0, 256.0])
    np.testing.assert_allclose(k, [[5000.0, 0, 10 + 96], [0, 5000.0, 20 + 128], [0, 0, 1]])
    with pytest.raises(InvalidInputError):
        osx_camera_matrix([0, 0, 0, 10])


def test_osx_npz_is_parsed_and_reprojected_into_the_true_camera(tmp_path, layer):
    path, vertices = _osx_file(tmp_path, layer)
    with pytest.raises(InvalidInputError, match="10475"):
        load_osx_npz(path)  # the synthetic mesh is not the 10475-vertex SMPL-X mesh
    osx = load_osx_npz(path, expected_vertices=None)
    np.testing.assert_allclose(osx.vertices, vertices, atol=1e-5)
    np.testing.assert_array_equal(osx.faces, layer.faces)
    np.testing.assert_allclose(osx.bbox_xywh, [100, 40, 150, 200])

    kept = place_osx_body(osx)
    assert kept.placed and np.allclose(kept.vertices, vertices, atol=1e-5)

    true_k = np.array([[520.0, 0, 250.0], [0, 520.0, 260.0], [0, 0, 1]])
    placed = place_osx_body(osx, true_k)
    assert placed.placed and "OSX" in placed.status
    # Rigid and metric: the same shape, only shifted ...
    shift = placed.vertices - osx.vertices
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-4)
    # ... so that the true camera sees it where OSX's virtual camera saw it (up to the perspective change of a
    # metric body brought from ~40 m to ~5 m).
    osx_pixels = _project(osx.vertices, osx.camera_matrix)
    error = np.linalg.norm(_project(placed.vertices, true_k) - osx_pixels, axis=1)
    body_height_px = np.ptp(osx_pixels[:, 1])
    assert error.mean() < 0.01 * body_height_px and error.max() < 0.03 * body_height_px, (error.mean(), error.max())
    assert placed.vertices[:, 2].mean() < 10.0  # a 520 px focal length brings the body much closer


def test_osx_npz_errors_are_actionable(tmp_path):
    with pytest.raises(MissingAssetError, match=r"osx_human2\.npz"):
        load_osx_npz(tmp_path / "missing.npz")
    with pytest.raises(InvalidInputError, match="bbox_2"):
        load_osx_npz({"smpl_vertices": np.zeros((1, 4, 3)), "smpl_faces": np.zeros((1, 3))}, expected_vertices=None)


def test_smplx_params_from_dict_and_flat_array(layer):
    rng = np.random.default_rng(0)
    flat = rng.normal(scale=0.2, size=sum(size for _, size in SMPLX_PARAM_LAYOUT)).astype(np.float32)
    parsed = parse_smplx_params(flat)
    assert [parsed[name].size for name, _ in SMPLX_PARAM_LAYOUT] == [size for _, size in SMPLX_PARAM_LAYOUT]
    np.testing.assert_array_equal(parsed["betas"], flat[:10])
    np.testing.assert_array_equal(parsed["transl"], flat[-3:])

    message_like = {
        "gender": "neutral",
        "betas": flat[:10],
        "global_orient": flat[10:13],
        "body_pose": flat[13:76],
        "left_hand_pose": [],
        "right_hand_pose": [],
        "jaw_pose": np.zeros(3),
        "expression": [],
        "transl": [0.1, 0.2, 2.5],
    }
    from_dict = parse_smplx_params(message_like)
    assert from_dict["left_hand_pose"].shape == (45,) and not from_dict["left_hand_pose"].any()  # flat hand
    assert from_dict["expression"].shape == (10,) and not from_dict["expression"].any()

    with pytest.raises(InvalidInputError, match="182"):
        parse_smplx_params(flat[:-1])
    with pytest.raises(InvalidInputError, match="body_pose"):
        parse_smplx_params(dict(message_like, body_pose=np.zeros(60)))
    with pytest.raises(InvalidInputError, match="unknown"):
        parse_smplx_params(dict(message_like, poses=np.zeros(3)))
    with pytest.raises(InvalidInputError, match="NaN"):
        parse_smplx_params(dict(message_like, transl=[np.nan, 0, 1]))


def test_body_from_params_matches_the_smplx_package(body_dir, layer):
    from ivlm_core.body.models import load_body_model, posed_mesh

    rng = np.random.default_rng(1)
    params = {
        "betas": rng.normal(size=10),
        "global_orient": [np.pi, 0.1, 0.0],
        "body_pose": rng.normal(scale=0.2, size=63),
        "right_hand_pose": rng.normal(scale=0.2, size=45),
        "transl": [0.1, -0.2, 2.5],
    }
    body = body_from_smplx_params(params, layer)
    reference = posed_mesh(load_body_model(body_dir, "smplx"), **params).vertices[0].detach().numpy()
    assert body.placed and body.params["left_hand_pose"].shape == (45,)
    np.testing.assert_allclose(body.vertices, reference, atol=1e-5)

    placer = CameraBodyPlacer(layer)
    np.testing.assert_allclose(place_from_params(placer, params).vertices, reference, atol=1e-5)
