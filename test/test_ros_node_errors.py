"""Missing weights / body files / CUDA: the node stays up, reports ERROR with the fix, and recovers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ivlm_ros.testing.node_harness import NodeProcess, Probe, make_image, sample_rgb

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NODE = "/ivlm"


@pytest.fixture(scope="module")
def broken_node(ros_context, tmp_path_factory) -> Iterator[NodeProcess]:
    missing = Path(tmp_path_factory.mktemp("no_weights")) / "interactvlm-3d-hcontact-damon"
    log = Path(tmp_path_factory.mktemp("ivlm_broken")) / "node.log"
    proc = NodeProcess(
        {
            "checkpoint_dir": str(missing),
            "device": "cpu",
            "diagnostics_period_s": 0.25,  # input_reliability stays at its default: sensor-data (best effort)
        },
        log,
    )
    yield proc
    assert proc.stop() == 0, proc.log()[-3000:]


@pytest.fixture(scope="module")
def probe(broken_node: NodeProcess) -> Iterator[Probe]:
    p = Probe(reliable_input=False)  # like a camera driver
    yield p
    p.destroy()


def test_missing_weights_keep_the_node_up_with_an_error_and_a_fix(
    broken_node: NodeProcess, probe: Probe
) -> None:
    status = probe.wait_status(lambda s: s["_level"] == 2, 60, "an ERROR diagnostic")
    assert status["model_loaded"] == "false" and status["lifecycle_state"] == "unconfigured"
    assert "interactvlm-3d-hcontact-damon" in status["_message"] and "not found" in status["_message"]
    probe.spin(1.0)
    assert broken_node.alive()
    log = broken_node.log()
    assert (
        "model not loaded" in log and "interactvlm-3d-hcontact-damon/config.json" in log and "release" in log
    )


def test_service_answers_with_the_reason_instead_of_hanging(probe: Probe) -> None:
    from ivlm_msgs.srv import EstimateInteraction

    request = EstimateInteraction.Request(image=make_image(sample_rgb(64), 1))
    response = probe.call(EstimateInteraction, f"{NODE}/estimate_interaction", request)
    assert not response.success and "model not loaded" in response.message


def test_fixing_the_parameters_and_configuring_again_recovers(probe: Probe, ros_node_params: dict) -> None:
    import torch

    # read-on-configure parameters may change while unconfigured
    for name in ("checkpoint_dir", "body_model_dir"):
        assert probe.set_parameter(NODE, name, ros_node_params[name]).successful
    if not torch.cuda.is_available():
        assert probe.set_parameter(NODE, "device", "cuda").successful
        assert not probe.change_state(NODE, "configure")
        status = probe.wait_status(lambda s: "CUDA" in s["_message"], 20, "a CUDA error")
        assert status["_level"] == 2 and "device" in status["_message"]
        assert probe.set_parameter(NODE, "device", "cpu").successful
    assert probe.change_state(NODE, "configure")
    assert probe.change_state(NODE, "activate")
    status = probe.wait_status(lambda s: s["lifecycle_state"] == "active", 30, "the node to become active")
    assert status["_level"] == 0 and status["model_loaded"] == "true"
    # default sensor-data QoS: best-effort frames from a camera-like publisher are processed
    probe.wait_matched(probe.image_pub)
    for attempt in range(5):  # best effort may drop a frame; a few tries make the test about QoS, not luck
        probe.publish_frame(sample_rgb(64), 600 + attempt)
        probe.spin(2.0)
        if probe.received["human"]:
            break
    assert probe.received["human"], "no result for 5 best-effort frames"
    assert probe.received["human"][0].header.stamp.sec >= 600
    # cleanup releases the model again
    assert probe.change_state(NODE, "deactivate") and probe.change_state(NODE, "cleanup")
    status = probe.wait_status(lambda s: s["lifecycle_state"] == "unconfigured", 20, "unconfigured")
    assert status["model_loaded"] == "false" and status["_level"] == 1
