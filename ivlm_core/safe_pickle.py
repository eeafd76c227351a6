"""Read the reference's joblib/pickle data files without letting them run code.

A pickle can name any importable callable; `joblib.load` and `pickle.load` call it. The reference ships data
(lift2d_dict.pkl, ...) as joblib pickles, so we read them with joblib's own unpickler restricted to an allow
list: numpy arrays (plain or in joblib's array wrapper) and the built-in containers, nothing else.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ivlm_core.errors import InvalidInputError, MissingAssetError

_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
}


def _allowed(module: str, name: str) -> bool:
    return (module, name) in _NUMPY_GLOBALS or (module.startswith("numpy") and name.endswith("DType"))


def load_data_pickle(path: str | Path, what: str, how_to_fix: str) -> Any:
    """The content of a joblib (or plain) pickle of numpy arrays and containers; any other global is refused.

    MissingAssetError when the file is absent, InvalidInputError when it is not such a pickle.
    """
    from joblib.numpy_pickle import NumpyUnpickler, _validate_fileobject_and_memmap

    class AllowListUnpickler(NumpyUnpickler):
        def find_class(self, module: str, name: str) -> Any:
            if not _allowed(module, name):
                raise pickle.UnpicklingError(f"refusing to load '{module}.{name}': data files hold arrays only")
            return super().find_class(module, name)

    path = Path(path)
    if not path.is_file():
        raise MissingAssetError(what, path, how_to_fix)
    try:
        with path.open("rb") as handle, _validate_fileobject_and_memmap(handle, str(path), None) as (fobj, _):
            if isinstance(fobj, str):
                raise InvalidInputError(f"'{path}' was written by joblib < 0.10; re-save it with a current joblib.")
            return AllowListUnpickler(str(path), fobj, ensure_native_byte_order=True).load()
    except InvalidInputError:
        raise
    except Exception as exc:  # unpickling raises many types for a corrupt or hostile file
        raise InvalidInputError(f"Could not read '{path}' as a data pickle ({what}): {exc}") from exc


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if not _allowed(module, name):
            raise pickle.UnpicklingError(f"refusing to load '{module}.{name}': data files hold arrays only")
        return super().find_class(module, name)


def load_npy(path: str | Path, what: str, how_to_fix: str) -> Any:
    """A .npy array; the pickle inside an object array (e.g. one dict per image) goes through the same allow
    list instead of numpy's unrestricted `allow_pickle=True`."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise MissingAssetError(what, path, how_to_fix)
    with path.open("rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _fortran, dtype = read_header(handle)
        except ValueError as err:
            raise InvalidInputError(f"'{path}' is not a .npy file ({what}): {err}") from None
        if not dtype.hasobject:
            return np.load(path, allow_pickle=False)
        try:
            array = _AllowListUnpickler(handle).load()
        except Exception as exc:  # unpickling raises many types for a corrupt or hostile file
            raise InvalidInputError(f"Could not read '{path}' as a data array ({what}): {exc}") from exc
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise InvalidInputError(f"'{path}' does not hold the {shape} array its header announces ({what})")
    return array
