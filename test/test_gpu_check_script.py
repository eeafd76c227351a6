"""scripts/gpu_check.sh --dry-run (any machine): lists every step and finds everything the steps need in the tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_dry_run_lists_the_steps_and_finds_its_files() -> None:
    env = {"PATH": "/usr/bin:/bin", "IVLM_PYTHON": sys.executable}
    run = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    for step in ("probe", "cuda_tests", "bench_bf16", "pipeline", "bench_int4", "bench_int8"):
        assert f"[{step}] timeout" in run.stdout
    assert "ivlm_core.bench.model_latency" in run.stdout and "-m cuda" in run.stdout
    assert "model_latency --repeats 5 --naive-repeats 1 --draft" in run.stdout  # the 13B run measures drafting
    assert "test/test_model_drafting.py" in run.stdout
    assert "dry run OK" in run.stdout and "MISSING in the tree" not in run.stdout


def test_gpu_check_rejects_unknown_options() -> None:
    run = subprocess.run(["bash", "scripts/gpu_check.sh", "--frobnicate"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and "unknown option" in run.stderr
