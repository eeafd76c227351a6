"""Where the reference parity vectors live in the repository (test/data/parity, data only, see its README.md).

A missing file FAILS the test that needs it: a fresh clone without the vectors must not pass by skipping the
very tests that prove ivlm computes what the reference computes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

PARITY_DIR = Path(__file__).resolve().parent / "data" / "parity"


def parity_file(*parts: str) -> Path:
    """Path of a parity file or folder under test/data/parity; pytest.fail when it is not there."""
    path = PARITY_DIR.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"parity data missing: {path.relative_to(PARITY_DIR.parents[1])}. The vectors are tracked in git "
            "under test/data/parity; restore them with `git checkout -- test/data/parity`.",
            pytrace=False,
        )
    return path
