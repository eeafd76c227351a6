"""pytest fixtures of the ROS tests (engineer D); registered in conftest.py by one import line.

``node`` and ``probe`` are the default node under test and its probe: one real tiny-model node process per
test module. A module that needs another node (a slow contact model, a bag, missing weights) defines its own
``node`` fixture, which ``probe`` then waits for, or its own ``probe`` (pytest's module-level override).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ivlm_ros.testing.node_harness import NodeProcess, Probe, ensure_ros_test_env


@pytest.fixture(scope="session")
def ros_context() -> Iterator[None]:
    """rclpy initialised once per test session, on loopback and a private domain."""
    ensure_ros_test_env()
    import rclpy

    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture(scope="session")
def ros_object_library(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An object library YAML with one small mesh ('bench': an icosphere in millimetres)."""
    import trimesh

    root = tmp_path_factory.mktemp("ros_object_library")
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=40.0)
    mesh.export(root / "ball.obj")
    (root / "objects.yaml").write_text("objects:\n  bench:\n    mesh: ball.obj\n    scale: 0.001\n")
    return {
        "yaml": root / "objects.yaml",
        "mesh": root / "ball.obj",
        "label": "bench",
        "num_vertices": len(mesh.vertices),
        "num_faces": len(mesh.faces),
    }


@pytest.fixture(scope="session")
def ros_node_params(
    tiny_checkpoints: dict, tiny_body_assets: tuple, ros_object_library: dict
) -> dict[str, Any]:
    """Parameters that make the real node load the tiny random model and the synthetic body models."""
    return {
        "checkpoint_dir": str(tiny_checkpoints["Gen"]),
        "body_model_dir": str(tiny_body_assets[2]),
        "object_library": str(ros_object_library["yaml"]),
        "device": "cpu",
        "input_reliability": "reliable",
        "diagnostics_period_s": 0.25,
    }


@pytest.fixture(scope="module")
def node(ros_context, ros_node_params, tmp_path_factory) -> Iterator[NodeProcess]:
    """One real node process per test module with the tiny model; it must exit cleanly (rc 0)."""
    log = tmp_path_factory.mktemp("ivlm_node") / "node.log"
    proc = NodeProcess(dict(ros_node_params), log)
    yield proc
    code = proc.stop()
    assert code == 0, f"node exited with {code}:\n{proc.log()[-3000:]}"


@pytest.fixture(scope="module")
def probe(node: NodeProcess) -> Iterator[Probe]:
    """A probe node matched to the active ``node``'s camera inputs."""
    probe = Probe()
    probe.wait_active(node)
    probe.wait_matched(probe.image_pub)
    probe.wait_matched(probe.info_pub)
    yield probe
    probe.destroy()
