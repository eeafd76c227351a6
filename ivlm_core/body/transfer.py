"""SMPL(-H) -> SMPL-X contact transfer with InteractVLM's `smpl_to_smplx.pkl` (10475 x 6890 linear map).

The contact predictor lifts its masks onto the SMPL-H mesh (6890 vertices); fitting and visualisation use
SMPL-X (10475). InteractVLM maps per-vertex contact with `M @ contacts` (`utils/utils.py:convert_contacts`).
The matrix is mostly zeros, so it is held as a scipy CSR matrix (a torch sparse copy per device for tensors)
instead of the 10475 x 6890 dense array (~580 MB in float64).

File formats accepted: the original joblib pickle `{'matrix': dense ndarray or scipy sparse}` (read with the
allow-listed unpickler of `ivlm_core.safe_pickle`, never `joblib.load`), a scipy `save_npz` file, or an `.npz`
with a dense `matrix` entry (both without pickle). `convert_transfer_to_npz` writes the sparse npz once so
later loads skip the 580 MB dense array.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.safe_pickle import load_pickle

SMPL_NUM_VERTICES = 6890
SMPLX_NUM_VERTICES = 10475
TRANSFER_FILE_NAME = "smpl_to_smplx.pkl"
TRANSFER_SOURCE = ("Download the InteractVLM data.zip (registration: https://download.is.tue.mpg.de, domain "
                   f"'interactvlm'), unzip it and copy data/{TRANSFER_FILE_NAME} into the body model folder")


def find_transfer_file(model_dir: str | Path) -> Path:
    """`<model_dir>/smpl_to_smplx.pkl` (or its converted `.npz`); MissingAssetError naming where to get it."""
    model_dir = Path(model_dir).expanduser()
    if model_dir.is_file():
        return model_dir
    for name in (TRANSFER_FILE_NAME.replace(".pkl", ".npz"), TRANSFER_FILE_NAME):
        if (model_dir / name).is_file():
            return model_dir / name
    raise MissingAssetError("SMPL -> SMPL-X contact transfer matrix", model_dir / TRANSFER_FILE_NAME,
                            TRANSFER_SOURCE)


def _read_matrix(path: Path) -> Any:
    if path.suffix == ".npz":
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
        if "format.npy" in names:  # scipy.sparse.save_npz layout
            return sp.load_npz(path)
        with np.load(path, allow_pickle=False) as data:
            if "matrix" not in data.files:
                raise InvalidInputError(f"{path} has no 'matrix' entry (found {data.files})")
            return data["matrix"]
    content = load_pickle(path, "transfer matrix pickle")  # allow-listed: a crafted file cannot run code
    if isinstance(content, dict):
        if "matrix" not in content:
            raise InvalidInputError(f"{path} holds a dict without a 'matrix' key (keys: {sorted(content)})")
        return content["matrix"]
    return content


class ContactTransfer:
    """Sparse linear map of per-vertex values from a source mesh (SMPL-H) to a target mesh (SMPL-X)."""

    def __init__(self, matrix: Any) -> None:
        if sp.issparse(matrix):
            csr = sp.csr_matrix(matrix, dtype=np.float32)
        else:
            dense = np.asarray(matrix)
            if dense.ndim != 2 or not np.issubdtype(dense.dtype, np.number):
                raise InvalidInputError(f"transfer matrix must be a 2-D numeric array, got {dense.dtype} "
                                        f"with shape {dense.shape}")
            csr = sp.csr_matrix(dense.astype(np.float32))
        csr.eliminate_zeros()
        self.matrix: sp.csr_matrix = csr
        self._torch: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    @classmethod
    def load(cls, path: str | Path, expected_shape: tuple[int, int] | None = None) -> ContactTransfer:
        """Load a `smpl_to_smplx.pkl` / `.npz` (a folder means `<folder>/smpl_to_smplx.pkl`).

        `expected_shape` (e.g. (10475, 6890) for the real bodies) turns a mismatch into a clear error.
        """
        path = find_transfer_file(path)
        transfer = cls(_read_matrix(path))
        if expected_shape is not None and transfer.matrix.shape != tuple(expected_shape):
            raise InvalidInputError(f"transfer matrix {path} has shape {transfer.matrix.shape}, expected "
                                    f"{tuple(expected_shape)} (target x source vertices)")
        return transfer

    @property
    def num_target(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def num_source(self) -> int:
        return int(self.matrix.shape[1])

    def save_npz(self, path: str | Path) -> Path:
        """Write the matrix in scipy's sparse npz format (fast to load, a few MB)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sp.save_npz(path, self.matrix)
        return path

    def _torch_matrix(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (device, dtype)
        if key not in self._torch:
            csr = self.matrix
            with warnings.catch_warnings():  # "sparse CSR support is in beta": matmul + autograd work
                warnings.simplefilter("ignore", UserWarning)
                self._torch[key] = torch.sparse_csr_tensor(
                    torch.from_numpy(csr.indptr.astype(np.int64)), torch.from_numpy(csr.indices.astype(np.int64)),
                    torch.from_numpy(csr.data).to(dtype), csr.shape, check_invariants=True).to(device)
        return self._torch[key]

    def apply(self, contacts: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Map (..., num_source) values to (..., num_target); numpy in, numpy out; torch keeps device/grad."""
        shape = tuple(contacts.shape)
        if not shape or shape[-1] != self.num_source:
            raise InvalidInputError(
                f"contacts must end with {self.num_source} source vertices, got shape {shape}")
        if isinstance(contacts, torch.Tensor):
            dtype = contacts.dtype if contacts.is_floating_point() else torch.float32
            if contacts.device.type == "cpu":  # scipy is ~100x faster than torch sparse on CPU
                flat = contacts.to(dtype).reshape(-1, self.num_source)
                return _ScipyMatmul.apply(flat, self).reshape(*shape[:-1], self.num_target)
            flat = contacts.reshape(-1, self.num_source).to(dtype).T.contiguous()  # (source, batch)
            out = (self._torch_matrix(contacts.device, dtype) @ flat).T
            return out.reshape(*shape[:-1], self.num_target)
        values = np.asarray(contacts)
        dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.dtype(np.float32)
        return self._apply_numpy(values, dtype, shape)

    def _apply_numpy(self, values: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        flat = values.reshape(-1, self.num_source).astype(dtype, copy=False)
        out = (self.matrix @ flat.T).T.astype(dtype, copy=False)
        return np.ascontiguousarray(out).reshape(*shape[:-1], self.num_target)

    __call__ = apply


class _ScipyMatmul(torch.autograd.Function):
    """(batch, source) -> (batch, target) with scipy on CPU tensors; the backward pass applies the transpose."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, transfer: ContactTransfer) -> torch.Tensor:
        ctx.transfer = transfer
        flat = values.detach().numpy()
        return torch.from_numpy(np.ascontiguousarray((transfer.matrix @ flat.T).T.astype(flat.dtype)))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        matrix_t = ctx.transfer.matrix.T.tocsr()
        flat = grad.detach().numpy()
        return torch.from_numpy(np.ascontiguousarray((matrix_t @ flat.T).T.astype(flat.dtype))), None


def convert_transfer_to_npz(src: str | Path, dst: str | Path | None = None) -> Path:
    """One-time conversion of `smpl_to_smplx.pkl` to a sparse `.npz` next to it (or at `dst`)."""
    src = find_transfer_file(src)
    dst = Path(dst) if dst is not None else src.with_suffix(".npz")
    return ContactTransfer.load(src).save_npz(dst)
