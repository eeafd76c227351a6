"""Error types that carry an actionable message for the user (what is wrong and how to fix it)."""

from __future__ import annotations

from pathlib import Path


class IvlmError(Exception):
    """Base class of every error ivlm raises on purpose."""


class MissingAssetError(IvlmError, FileNotFoundError):
    """A user-supplied file (weights, body model, mapping) is not where it is expected."""

    def __init__(self, what: str, path: str | Path, how_to_fix: str) -> None:
        self.what = what
        self.path = Path(path)
        self.how_to_fix = how_to_fix
        super().__init__(f"{what} not found at '{self.path}'. {how_to_fix}")


class InvalidInputError(IvlmError, ValueError):
    """Input data (image, mesh, parameter, tensor) is malformed; the message says what was expected."""


class CheckpointError(IvlmError):
    """A checkpoint folder does not match the released InteractVLM layout."""
