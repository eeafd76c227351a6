"""The repository works on any machine: no absolute path of a development machine in any tracked file, and the
parity vectors that the parity tests read are all in test/data/parity, unchanged."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

from parity_data import PARITY_DIR, parity_file

REPO = Path(__file__).resolve().parents[1]
# Built from pieces so that this file does not match itself.
_ROOTS = ("work", "tmp", "root", "home/[A-Za-z_][A-Za-z0-9_.-]*", "Users/[A-Za-z][A-Za-z0-9_.-]*")
MACHINE_PATH = re.compile(("(?<![A-Za-z0-9_.~-])/(?:" + "|".join(_ROOTS) + ")/").encode())
SKIPPED_DIRS = {".git", ".venv", "out", "build", "install", "log", "__pycache__", ".pytest_cache", ".ruff_cache"}


def _tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        return [REPO / name for name in listed.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an unpacked archive)
        files = []
        for root, dirs, names in os.walk(REPO):
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
            files += [Path(root) / n for n in names]
        return files


def test_no_absolute_machine_path_in_the_repository() -> None:
    hits = []
    for path in _tracked_files():
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            match = MACHINE_PATH.search(line)
            if match:
                hits.append(f"{path.relative_to(REPO)}:{number}: {match.group().decode(errors='replace')}")
    assert not hits, "absolute machine paths (use paths relative to the repo or a fixture):\n" + "\n".join(hits)


def test_machine_path_pattern_finds_what_it_should() -> None:
    slash = "/"
    for bad in ("work", "tmp", "root", "home" + slash + "alice", "Users" + slash + "bob"):
        assert MACHINE_PATH.search(f'x = "{slash}{bad}{slash}data"'.encode()), bad
    for fine in ("test/data/parity", "https://example.org/tmp/x", "~/work/ok", "docs/home/x"):
        assert not MACHINE_PATH.search(fine.encode()), fine


def test_parity_vectors_are_all_there_and_unchanged() -> None:
    manifest = parity_file("MANIFEST.sha256").read_text().splitlines()
    assert len(manifest) >= 20
    for line in manifest:
        digest, name = line.split(maxsplit=1)
        data = parity_file(*name.split("/")).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"{name} differs from the stored parity vectors"
    listed = {line.split(maxsplit=1)[1] for line in manifest}
    present = {p.relative_to(PARITY_DIR).as_posix() for p in PARITY_DIR.rglob("*") if p.is_file()}
    assert present - listed == {"MANIFEST.sha256"}
