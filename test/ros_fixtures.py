"""pytest fixtures of the ROS tests (engineer D); registered in conftest.py by one import line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from ros_helpers import ensure_ros_test_env


@pytest.fixture(scope="session")
def ros_context() -> Iterator[None]:
    """rclpy initialised once per test session, on loopback and a private domain."""
    ensure_ros_test_env()
    import rclpy

    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture(scope="session")
def ros_node_params(tiny_checkpoints: dict, tiny_body_assets: tuple) -> dict[str, Any]:
    """Parameters that make the real node load the tiny random model and the synthetic body models."""
    return {
        "checkpoint_dir": str(tiny_checkpoints["Gen"]),
        "body_model_dir": str(tiny_body_assets[2]),
        "device": "cpu",
        "input_reliability": "reliable",
        "diagnostics_period_s": 0.25,
    }
