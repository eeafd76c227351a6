"""Body model loading through the real smplx package, on synthetic files in the official layouts."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch

from ivlm_core.body.models import (
    PosedMesh,
    canonical_vitruvian_mesh,
    convert_body_model_to_npz,
    find_body_model_file,
    load_body_model,
    load_model_arrays,
    posed_mesh,
    vitruvian_body_pose,
)
from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.testing.synthetic_body import write_synthetic_smplh, write_synthetic_smplx

LEFT_HIP, RIGHT_HIP, LEFT_ELBOW, LEFT_WRIST, RIGHT_WRIST, LEFT_ANKLE, RIGHT_ANKLE = 1, 2, 18, 20, 21, 7, 8


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("body_models")
    write_synthetic_smplx(root)
    write_synthetic_smplh(root)
    return root


@pytest.fixture(scope="module")
def smplx_model(model_dir) -> smplx.SMPLX:
    return load_body_model(model_dir, "smplx")


def test_missing_files_name_the_expected_path_and_source(tmp_path) -> None:
    with pytest.raises(MissingAssetError) as err:
        find_body_model_file(tmp_path, "smplx")
    assert err.value.path == tmp_path / "smplx" / "SMPLX_NEUTRAL.npz"
    assert "smpl-x.is.tue.mpg.de" in str(err.value)
    with pytest.raises(MissingAssetError, match=r"mano\.is\.tue\.mpg\.de"):
        find_body_model_file(tmp_path, "smplh", "female")
    with pytest.raises(InvalidInputError):
        find_body_model_file(tmp_path, "smpl")


def test_file_lookup_prefers_the_documented_extension(model_dir) -> None:
    assert find_body_model_file(model_dir, "smplh").name == "SMPLH_NEUTRAL.pkl"
    assert find_body_model_file(model_dir / "smplh", "smplh").name == "SMPLH_NEUTRAL.pkl"
    assert find_body_model_file(model_dir, "smplx").name == "SMPLX_NEUTRAL.npz"


def test_rest_pose_reproduces_the_template(smplx_model) -> None:
    out = posed_mesh(smplx_model)
    v_template = smplx_model.v_template
    torch.testing.assert_close(out.vertices[0], v_template, atol=1e-5, rtol=0)
    joints = smplx_model.J_regressor @ v_template
    torch.testing.assert_close(out.joints[0, :55], joints, atol=1e-5, rtol=0)
    assert out.joints.shape[1] == 55 + 21 + 51  # skeleton + keypoint vertices + face landmarks
    vertices, faces = out  # unpacks as (vertices, faces)
    assert faces.dtype == np.int64 and faces.max() < vertices.shape[1]


def test_elbow_rotation_moves_only_the_forearm(smplx_model) -> None:
    body_pose = torch.zeros(1, 21, 3)
    body_pose[0, LEFT_ELBOW - 1] = torch.tensor([0.0, np.pi / 2, 0.0])  # bend the left elbow 90 deg about y
    rest, bent = posed_mesh(smplx_model).joints[0], posed_mesh(smplx_model, body_pose=body_pose).joints[0]
    forearm = rest[LEFT_WRIST] - rest[LEFT_ELBOW]
    moved = bent[LEFT_WRIST] - bent[LEFT_ELBOW]
    torch.testing.assert_close(moved.norm(), forearm.norm(), atol=1e-4, rtol=0)  # rigid bone
    # R_y(90 deg) maps the +x forearm onto -z
    assert moved[2] < -0.9 * forearm.norm() and abs(moved[0]) < 0.1 * forearm.norm()
    torch.testing.assert_close(bent[RIGHT_WRIST], rest[RIGHT_WRIST], atol=1e-5, rtol=0)
    torch.testing.assert_close(bent[LEFT_ELBOW], rest[LEFT_ELBOW], atol=1e-5, rtol=0)


def test_parameters_batch_shape_and_translation(smplx_model) -> None:
    transl = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    out = posed_mesh(smplx_model, transl=transl, betas=np.zeros(10), expression=torch.zeros(2, 10),
                     jaw_pose=[0.3, 0.0, 0.0], left_hand_pose=np.full((15, 3), 0.1))
    assert out.vertices.shape[0] == 2
    torch.testing.assert_close(out.vertices[1] - out.vertices[0],
                               torch.tensor([1.0, 2.0, 3.0]).expand_as(out.vertices[0]), atol=1e-5, rtol=0)
    tall = posed_mesh(smplx_model, betas=[[2.0] + [0.0] * 9]).vertices[0]
    assert (tall[:, 1].max() - tall[:, 1].min()) > (out.vertices[0][:, 1].max() - out.vertices[0][:, 1].min())
    with pytest.raises(InvalidInputError, match="body_pose"):
        posed_mesh(smplx_model, body_pose=np.zeros(60))
    with pytest.raises(InvalidInputError, match="unknown"):
        posed_mesh(smplx_model, pose=np.zeros(3))


def test_pca_hands_and_gradients(model_dir) -> None:
    model = load_body_model(model_dir, "smplx", use_pca=True, num_pca_comps=6, flat_hand_mean=False)
    pose = torch.zeros(1, 6, requires_grad=True)
    out = posed_mesh(model, left_hand_pose=pose)
    out.vertices.sum().backward()
    assert pose.grad is not None and torch.isfinite(pose.grad).all()
    with pytest.raises(InvalidInputError):
        posed_mesh(model, left_hand_pose=np.zeros(45))


def test_vitruvian_pose_spreads_the_legs(model_dir) -> None:
    pose = vitruvian_body_pose()
    assert pose.shape == (1, 63)
    expected = torch.tensor([0, 0, np.pi / 6, 0, 0, -np.pi / 6])
    torch.testing.assert_close(pose[0, :6], expected, atol=1e-6, rtol=0)
    assert torch.count_nonzero(pose) == 2
    model = load_body_model(model_dir, "smplh")
    rest = posed_mesh(model).joints[0]
    spread = posed_mesh(model, body_pose=pose).joints[0]
    assert spread[LEFT_ANKLE, 0] - rest[LEFT_ANKLE, 0] > 0.15  # left leg swings out to +x
    assert spread[RIGHT_ANKLE, 0] - rest[RIGHT_ANKLE, 0] < -0.15
    vertices, faces = canonical_vitruvian_mesh(model_dir)
    assert vertices.dtype == np.float32 and faces.dtype == np.int64
    expected_vertices = posed_mesh(model, body_pose=pose).vertices[0].detach().numpy()
    np.testing.assert_allclose(vertices, expected_vertices, atol=1e-6)


def test_chumpy_pkl_loads_like_the_npz(model_dir) -> None:
    from_pkl = load_model_arrays(model_dir / "smplh" / "SMPLH_NEUTRAL.pkl")
    from_npz = load_model_arrays(model_dir / "smplh" / "SMPLH_NEUTRAL.npz")
    for key in ("shapedirs", "posedirs", "J_regressor", "v_template", "weights"):
        np.testing.assert_array_equal(from_pkl[key], from_npz[key], err_msg=key)
    assert isinstance(from_pkl["J_regressor"], np.ndarray)  # scipy CSC densified
    pkl_model = load_body_model(model_dir / "smplh" / "SMPLH_NEUTRAL.pkl", "smplh")
    npz_model = load_body_model(model_dir / "smplh" / "SMPLH_NEUTRAL.npz", "smplh")
    pose = torch.randn(1, 63, generator=torch.Generator().manual_seed(0)) * 0.3
    torch.testing.assert_close(posed_mesh(pkl_model, body_pose=pose).vertices,
                               posed_mesh(npz_model, body_pose=pose).vertices)


def test_smplx_pkl_goes_through_npz(model_dir, tmp_path, smplx_model) -> None:
    arrays = load_model_arrays(model_dir / "smplx" / "SMPLX_NEUTRAL.npz")
    pkl = tmp_path / "smplx" / "SMPLX_NEUTRAL.pkl"
    pkl.parent.mkdir()
    pkl.write_bytes(pickle.dumps({k: (v.tolist() if v.dtype.kind == "U" else v) for k, v in arrays.items()},
                                 protocol=2))
    model = load_body_model(tmp_path, "smplx")
    torch.testing.assert_close(posed_mesh(model, jaw_pose=[0.2, 0, 0]).vertices,
                               posed_mesh(smplx_model, jaw_pose=[0.2, 0, 0]).vertices)
    converted = convert_body_model_to_npz(pkl, tmp_path / "converted.npz")
    with np.load(converted) as data:
        np.testing.assert_array_equal(data["posedirs"], arrays["posedirs"])


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_unpickler_refuses_arbitrary_code(tmp_path) -> None:
    path = tmp_path / "SMPLH_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({"v_template": _Evil()}, protocol=2))
    with pytest.raises(InvalidInputError, match="refusing"):
        load_model_arrays(path)


def test_derived_chumpy_expressions_are_reported(tmp_path) -> None:
    # a protocol-2 pickle of {'shapedirs': chumpy.ch_ops.add(...)} without a plain value 'x'
    payload = (b"\x80\x02}q\x00X\t\x00\x00\x00shapedirsq\x01c__builtin__\nobject\nq\x02)\x81q\x03}q\x04"
               b"X\x01\x00\x00\x00aq\x05K\x01sbs.")
    payload = payload.replace(b"c__builtin__\nobject\n", b"cchumpy.ch_ops\nadd\n")
    path = tmp_path / "m.pkl"
    path.write_bytes(payload)
    with pytest.raises(InvalidInputError, match="derived chumpy expression"):
        load_model_arrays(path)


def test_small_meshes_need_their_own_keypoint_ids(tmp_path, model_dir) -> None:
    arrays = load_model_arrays(model_dir / "smplx" / "SMPLX_NEUTRAL.npz")
    for key in ("ivlm_keypoint_vertex_names", "ivlm_keypoint_vertex_ids"):
        arrays.pop(key)
    (tmp_path / "smplx").mkdir()
    np.savez(tmp_path / "smplx" / "SMPLX_NEUTRAL.npz", **arrays)
    with pytest.raises(InvalidInputError, match="keypoint_vertex_ids"):
        load_body_model(tmp_path, "smplx")
    ids = {name: 0 for name in ("nose", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel",
                                "RBigToe", "RSmallToe", "RHeel", "lthumb", "lindex", "lmiddle", "lring",
                                "lpinky", "rthumb", "rindex", "rmiddle", "rring", "rpinky")}
    ids["nose"] = 5
    model = load_body_model(tmp_path, "smplx", keypoint_vertex_ids=ids)
    out: PosedMesh = posed_mesh(model)
    torch.testing.assert_close(out.joints[0, 55], out.vertices[0, 5])


def test_protocol_0_pickles_load(tmp_path, model_dir) -> None:
    path = write_synthetic_smplh(tmp_path, formats=("pkl",), protocol=0)
    assert path.read_bytes()[:1] != b"\x80"  # text protocol, as Python 2 wrote by default
    arrays = load_model_arrays(path)
    reference = load_model_arrays(model_dir / "smplh" / "SMPLH_NEUTRAL.npz")
    np.testing.assert_array_equal(arrays["shapedirs"], reference["shapedirs"])


def test_unmerged_smplh_without_hand_basis(tmp_path, model_dir) -> None:
    arrays = load_model_arrays(model_dir / "smplh" / "SMPLH_NEUTRAL.npz")
    for key in ("hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr"):
        arrays.pop(key)
    (tmp_path / "smplh").mkdir()
    np.savez(tmp_path / "smplh" / "SMPLH_NEUTRAL.npz", **arrays)
    # flat axis-angle hands never touch the basis: the canonical mesh is unchanged
    vertices, _ = canonical_vitruvian_mesh(tmp_path)
    np.testing.assert_allclose(vertices, canonical_vitruvian_mesh(model_dir)[0], atol=1e-6)
    with pytest.raises(InvalidInputError, match="merge_smplh_mano"):
        load_body_model(tmp_path, "smplh", use_pca=True)
