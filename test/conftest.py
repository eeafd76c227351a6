"""Shared pytest fixtures. Each engineer keeps their fixtures in their own clearly marked section."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


# ==================================================================================================
# GPU (issue 9): tests marked `cuda` skip where torch sees no CUDA device; without one, the Triton decode
# kernels run in Triton's CPU interpreter, which has to be chosen before anything imports triton
# ==================================================================================================
def _interpret_triton_without_a_gpu() -> None:
    import torch

    if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


_interpret_triton_without_a_gpu()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run scripts/gpu_check.sh on one)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


# ==================================================================================================
# Model (engineer C2): tiny random InteractVLM checkpoints in the released folder layout
# ==================================================================================================
@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{'Gen': folder, 'Gen-Hu-Obj': folder}: tiny released-layout checkpoints (+ clip_vision_tower/)."""
    from ivlm_core.testing.tiny_checkpoint import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny_checkpoints")
    return {tt: build_tiny_checkpoint(root / tt, tt) for tt in ("Gen", "Gen-Hu-Obj")}


@pytest.fixture(scope="session")
def tiny_body_assets(tmp_path_factory: pytest.TempPathFactory):
    """(HumanRenderAssets of the synthetic SMPL-H Vitruvian body at 64 px, ContactTransfer, body model dir)."""
    from ivlm_core.body.transfer import ContactTransfer
    from ivlm_core.model.processing import HumanRenderAssets
    from ivlm_core.testing.synthetic_body import write_synthetic_body_models

    body_dir = write_synthetic_body_models(tmp_path_factory.mktemp("tiny_body_models"))
    assets = HumanRenderAssets.render_vitruvian(body_dir, image_size=64)
    return assets, ContactTransfer.load(body_dir), body_dir


def _load_tiny(folder: Path, assets_and_transfer):
    from ivlm_core.model.checkpoint import load_checkpoint

    assets, transfer, _ = assets_and_transfer
    return load_checkpoint(folder, device="cpu", human_assets=assets, contact_transfer=transfer,
                           object_render_size=64)


@pytest.fixture(scope="session")
def tiny_model_gen(tiny_checkpoints, tiny_body_assets):
    """The token_type Gen tiny model, loaded through the real loader, with 64 px human renders."""
    return _load_tiny(tiny_checkpoints["Gen"], tiny_body_assets)


@pytest.fixture(scope="session")
def tiny_model_joint(tiny_checkpoints, tiny_body_assets):
    """The token_type Gen-Hu-Obj ([HSEG]/[OSEG] + AttentionSplitter) tiny model."""
    return _load_tiny(tiny_checkpoints["Gen-Hu-Obj"], tiny_body_assets)


@pytest.fixture(scope="module")
def private_tiny_models(tiny_checkpoints, tiny_body_assets):
    """{'Gen': model, 'Gen-Hu-Obj': model}: copies of one test module's own, for tests that re-wire the LM head
    (draft-and-verify, issue 13); the shared session models stay untouched."""
    return {tt: _load_tiny(folder, tiny_body_assets) for tt, folder in tiny_checkpoints.items()}


# ==================================================================================================
# ROS node (engineer D): rclpy session + tiny-model node parameters, defined in test/ros_fixtures.py
# ==================================================================================================
from ros_fixtures import (  # noqa: E402, F401
    node,
    probe,
    ros_context,
    ros_node_params,
    ros_object_library,
)
