"""Reading the third-party pickles ivlm needs without ever executing code from them.

The official SMPL-H/SMPL-X `.pkl` body models (Python-2 pickles holding `chumpy` arrays), InteractVLM's
`smpl_to_smplx.pkl` and the object demo's `lift2d_dict.pkl` (both written with `joblib.dump`) are pickles.
`pickle.load`/`joblib.load` would run whatever callable such a file names, so a crafted file placed in a
data folder would run code at configure. :func:`load_pickle` instead resolves only an allow-list of globals
(numpy arrays and dtypes, scipy sparse matrices, plain containers; chumpy arrays become inert stand-ins) and
understands joblib's layout (arrays stored as raw bytes after a `NumpyArrayWrapper` record; optionally
zlib/gzip/bz2/xz compressed). Anything else is refused with :class:`InvalidInputError` naming the file and the
global it wanted. Object-dtype arrays, which joblib stores as a nested unrestricted pickle, are refused too.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import importlib
import io
import lzma
import pickle
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import scipy.sparse as sp

from ivlm_core.errors import InvalidInputError, MissingAssetError

_SAFE_GLOBALS = {
    ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"), ("__builtin__", "object"),
    ("builtins", "object"), ("__builtin__", "set"), ("builtins", "set"), ("_codecs", "encode"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}  # fmt: skip
_NUMPY_RECONSTRUCTORS = {"_reconstruct", "scalar", "ndarray", "dtype", "_frombuffer"}
_SPARSE_CLASSES = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}
_JOBLIB_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
# (magic prefix, decompressor) of the compressors joblib.dump can use; no prefix match = a raw pickle.
_COMPRESSED = (
    (b"\x1f\x8b", gzip.decompress),
    (b"BZ", bz2.decompress),
    (b"\xfd7zXZ", lzma.decompress),
    (b"\x5d\x00\x00", lzma.decompress),  # legacy .lzma
    (b"\x78", zlib.decompress),
)


class ChumpyStandIn:
    """Receives the pickled state of a chumpy object; only plain `Ch` values (state key 'x') are usable."""

    chumpy_class = "Ch"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"x": state}


def _chumpy_class(name: str) -> type:
    return type(name, (ChumpyStandIn,), {"chumpy_class": name})


class _JoblibArrayRecord:
    """Stand-in for joblib's NumpyArrayWrapper: the metadata of an array whose bytes follow in the stream."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


def _read_exact(handle: BinaryIO, size: int, where: str) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise pickle.UnpicklingError(f"{where}: truncated array data ({len(data)} of {size} bytes)")
    return data


class RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its BUILD can be hooked for joblib
    """Allow-list unpickler: numpy arrays, scipy sparse matrices, chumpy arrays (as stand-ins), containers."""

    dispatch = pickle._Unpickler.dispatch.copy()

    def __init__(self, handle: BinaryIO, where: str) -> None:
        super().__init__(handle, encoding="latin1")
        self._handle = handle
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return _chumpy_class(name)
        if (module, name) == _JOBLIB_WRAPPER:
            return _JoblibArrayRecord
        if module.startswith("scipy.sparse") and name in _SPARSE_CLASSES:
            return getattr(sp, name)
        if module.startswith("numpy") and name in _NUMPY_RECONSTRUCTORS:
            for candidate in (module, module.replace("numpy.core", "numpy._core")):
                with contextlib.suppress(ImportError, AttributeError):
                    return getattr(importlib.import_module(candidate), name)
        if (module, name) in _SAFE_GLOBALS or (module.startswith("numpy") and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load '{module}.{name}' from {self._where}: only numpy arrays, scipy sparse matrices, "
            "chumpy arrays and plain containers may be read from a data file (it would run code)"
        )

    def load_build(self) -> None:
        super().load_build()
        if isinstance(self.stack[-1], _JoblibArrayRecord):
            self.stack[-1] = self._read_joblib_array(self.stack[-1].state)

    dispatch[pickle.BUILD[0]] = load_build

    def _read_joblib_array(self, state: dict) -> np.ndarray:
        """joblib >= 0.10 layout: [alignment padding length byte + padding] then the raw array bytes."""
        dtype, shape, order = state.get("dtype"), state.get("shape"), state.get("order", "C")
        if not isinstance(dtype, np.dtype) or not isinstance(shape, tuple) or order not in ("C", "F"):
            raise pickle.UnpicklingError(f"{self._where}: malformed joblib array record {sorted(state)}")
        if state.get("subclass", np.ndarray) is not np.ndarray:
            raise pickle.UnpicklingError(f"{self._where}: joblib array subclass {state['subclass']} refused")
        if dtype.hasobject:
            raise pickle.UnpicklingError(
                f"refusing the object array in {self._where}: joblib stores it as a nested unrestricted pickle"
            )
        if state.get("numpy_array_alignment_bytes") is not None:
            padding = _read_exact(self._handle, 1, self._where)[0]
            _read_exact(self._handle, padding, self._where)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        data = _read_exact(self._handle, count * dtype.itemsize, self._where)
        array = np.frombuffer(data, dtype=dtype, count=count).copy()
        if order == "F":
            return array.reshape(shape[::-1]).transpose()
        return array.reshape(shape)


def load_pickle(path: str | Path, what: str = "data file") -> Any:
    """Unpickle ``path`` (a plain or joblib pickle, possibly compressed) through the allow-list.

    Raises InvalidInputError naming the file when it is corrupt or would need anything beyond the allow-list.
    """
    path = Path(path)
    where = f"{what} {path}"
    try:
        with path.open("rb") as raw:
            head = raw.read(6)
            raw.seek(0)
            decompress = next((fn for magic, fn in _COMPRESSED if head.startswith(magic)), None)
            handle: BinaryIO = io.BytesIO(decompress(raw.read())) if decompress else raw
            return RestrictedUnpickler(handle, where).load()
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            OSError, zlib.error, lzma.LZMAError) as err:
        raise InvalidInputError(f"cannot read the {where}: {err}") from err


def load_data_pickle(path: str | Path, what: str, how_to_fix: str) -> Any:
    """:func:`load_pickle` for a reference data file (e.g. lift2d_dict.pkl): MissingAssetError with
    ``how_to_fix`` when it is absent, InvalidInputError when it is not a pickle of arrays and containers."""
    path = Path(path)
    if not path.is_file():
        raise MissingAssetError(what, path, how_to_fix)
    return load_pickle(path, what)


def load_npy(path: str | Path, what: str, how_to_fix: str) -> Any:
    """A .npy array; the pickle inside an object array (e.g. DAMON's one dict per image) goes through the same
    allow-list instead of numpy's unrestricted ``allow_pickle=True``."""
    path = Path(path)
    if not path.is_file():
        raise MissingAssetError(what, path, how_to_fix)
    with path.open("rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _fortran, dtype = read_header(handle)
        except ValueError as err:
            raise InvalidInputError(f"'{path}' is not a .npy file ({what}): {err}") from None
        if not dtype.hasobject:
            return np.load(path, allow_pickle=False)
        try:
            array = RestrictedUnpickler(handle, f"{what} {path}").load()
        except Exception as exc:  # unpickling raises many types for a corrupt or hostile file
            raise InvalidInputError(f"Could not read '{path}' as a data array ({what}): {exc}") from exc
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise InvalidInputError(f"'{path}' does not hold the {shape} array its header announces ({what})")
    return array
