"""SMPL(-H) -> SMPL-X contact transfer: file formats, sparse application, shapes and errors."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ivlm_core.body.transfer import ContactTransfer, convert_transfer_to_npz, find_transfer_file
from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.testing.synthetic_body import write_synthetic_transfer

# 3 target vertices from 4 source vertices:
#   t0 = s0, t1 = (s1 + s2) / 2, t2 = 0.25 s3 + 0.75 s0
MATRIX = np.array([[1.0, 0.0, 0.0, 0.0],
                   [0.0, 0.5, 0.5, 0.0],
                   [0.75, 0.0, 0.0, 0.25]])


@pytest.mark.parametrize("stored", ["dense", "sparse", "npz-sparse", "npz-dense"])
def test_every_file_format_gives_the_same_map(tmp_path, stored) -> None:
    if stored == "dense":
        path = tmp_path / "smpl_to_smplx.pkl"
        joblib.dump({"matrix": MATRIX}, path)
    elif stored == "sparse":
        path = tmp_path / "smpl_to_smplx.pkl"
        joblib.dump({"matrix": sp.csc_matrix(MATRIX)}, path)
    elif stored == "npz-sparse":
        path = tmp_path / "smpl_to_smplx.npz"
        sp.save_npz(path, sp.csr_matrix(MATRIX))
    else:
        path = tmp_path / "smpl_to_smplx.npz"
        np.savez(path, matrix=MATRIX)
    transfer = ContactTransfer.load(tmp_path)  # a folder means <folder>/smpl_to_smplx.{npz,pkl}
    assert (transfer.num_target, transfer.num_source) == (3, 4)
    assert transfer.matrix.nnz == 5  # zeros are not stored
    contacts = np.array([1.0, 0.0, 1.0, 0.2])
    # by hand: t0 = 1, t1 = (0 + 1)/2 = 0.5, t2 = 0.75*1 + 0.25*0.2 = 0.8
    np.testing.assert_allclose(transfer.apply(contacts), [1.0, 0.5, 0.8], rtol=1e-6)


def test_numpy_and_torch_batches(tmp_path) -> None:
    path = write_synthetic_transfer(tmp_path / "t.pkl", num_target=11, num_source=7)
    transfer = ContactTransfer.load(path)
    dense = joblib.load(path)["matrix"].toarray()
    contacts = np.random.default_rng(0).uniform(size=(2, 3, 7)).astype(np.float32)
    out = transfer.apply(contacts)
    assert out.shape == (2, 3, 11) and out.dtype == np.float32
    np.testing.assert_allclose(out, contacts @ dense.T, rtol=1e-5)
    tensor = torch.tensor(contacts, dtype=torch.float64, requires_grad=True)
    out_t = transfer(tensor)
    assert out_t.shape == (2, 3, 11) and out_t.dtype == torch.float64
    np.testing.assert_allclose(out_t.detach().numpy(), out, rtol=1e-5)
    out_t.sum().backward()  # gradient of the sum is each source column's total weight
    np.testing.assert_allclose(tensor.grad[0, 0].numpy(), dense.sum(axis=0), rtol=1e-5)
    assert transfer.apply(np.array([True] * 7)).dtype == np.float32  # bool masks become floats


def test_shape_errors_are_explicit(tmp_path) -> None:
    path = tmp_path / "smpl_to_smplx.pkl"
    joblib.dump({"matrix": MATRIX}, path)
    transfer = ContactTransfer.load(path)
    with pytest.raises(InvalidInputError, match="4 source vertices"):
        transfer.apply(np.zeros(5))
    with pytest.raises(InvalidInputError, match="expected"):
        ContactTransfer.load(path, expected_shape=(10475, 6890))
    joblib.dump({"wrong": MATRIX}, tmp_path / "bad.pkl")
    with pytest.raises(InvalidInputError, match="'matrix'"):
        ContactTransfer.load(tmp_path / "bad.pkl")
    with pytest.raises(InvalidInputError, match="2-D"):
        ContactTransfer(np.zeros(3))


def test_missing_file_says_where_to_get_it(tmp_path) -> None:
    with pytest.raises(MissingAssetError) as err:
        find_transfer_file(tmp_path)
    assert err.value.path == tmp_path / "smpl_to_smplx.pkl"
    assert "data.zip" in str(err.value)


def test_one_time_npz_conversion(tmp_path) -> None:
    src = tmp_path / "smpl_to_smplx.pkl"
    joblib.dump({"matrix": MATRIX}, src)
    dst = convert_transfer_to_npz(src)
    assert dst == tmp_path / "smpl_to_smplx.npz"
    assert find_transfer_file(tmp_path) == dst  # the converted file is preferred afterwards
    np.testing.assert_allclose(ContactTransfer.load(dst).matrix.toarray(), MATRIX)


def test_gradients_and_the_accelerator_path() -> None:
    transfer = ContactTransfer(MATRIX)
    x = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(transfer.apply, (x,))
    # the torch sparse matrix used for accelerator tensors equals the scipy one
    sparse = transfer._torch_matrix(torch.device("cpu"), torch.float64)
    torch.testing.assert_close(sparse @ x.detach().T.contiguous(), torch.from_numpy(MATRIX) @ x.detach().T)
    if torch.cuda.is_available():
        on_gpu = transfer.apply(x.detach().cuda())
        torch.testing.assert_close(on_gpu.cpu(), transfer.apply(x.detach()))
