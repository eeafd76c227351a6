"""A failing republish of the last frame (the idle body loop showing a new contact) is counted in
``republish_failed`` with its reason, and the node keeps processing frames and answering the service.

The node under test is ``ivlm_ros.testing.failing_republish_node``: the real node whose marker encoding
raises for a stamp it already encoded, so each frame's first publish works and its republish fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ivlm_ros.testing.failing_republish_node import INJECTED_ERROR
from ivlm_ros.testing.node_harness import FAILING_REPUBLISH_NODE, NodeProcess, Probe, make_image, sample_rgb

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NODE = "/ivlm"
RESULT_S = 60.0


@pytest.fixture(scope="module")
def node(ros_context, ros_node_params, tmp_path_factory) -> Iterator[NodeProcess]:
    log = Path(tmp_path_factory.mktemp("ivlm_republish_node")) / "node.log"
    proc = NodeProcess(dict(ros_node_params), log, module=FAILING_REPUBLISH_NODE)
    yield proc
    assert proc.stop() == 0, proc.log()[-3000:]


def test_a_failed_republish_is_counted_and_the_node_keeps_working(probe: Probe, node: NodeProcess) -> None:
    from ivlm_msgs.srv import EstimateInteraction

    start = probe.fresh_status()
    assert int(start["republish_failed"]) == 0
    rgb = sample_rgb(96)
    probe.publish_frame(rgb, 300)
    probe.wait_for(lambda: probe.by_stamp("human", 300), RESULT_S, "the contact of frame 300")
    # The contact arrived after the frame's bodies went out: the idle body loop republishes frame 300 and fails.
    status = probe.wait_status(lambda s: int(s["republish_failed"]) >= 1, 10, "republish_failed to count")
    assert f"republishing bodies: RuntimeError: {INJECTED_ERROR}" in status["last_error"]
    assert status["frames_failed"] == start["frames_failed"]  # the frame itself was published
    assert len(probe.by_stamp("markers", 300)) == 1  # once: the failed republish sent no markers

    probe.publish_frame(rgb, 301)  # still processing frames ...
    probe.wait_for(lambda: probe.by_stamp("estimate", 301), RESULT_S, "the estimate of frame 301")
    probe.wait_for(lambda: probe.by_stamp("human", 301), RESULT_S, "the contact of frame 301")
    status = probe.wait_status(lambda s: int(s["republish_failed"]) >= 2, 10, "the second republish to fail")
    assert status["_level"] == 0 and status["lifecycle_state"] == "active"
    request = EstimateInteraction.Request(image=make_image(rgb, 302), object_query="chair", task="human_contact")
    response = probe.call(EstimateInteraction, f"{NODE}/estimate_interaction", request, RESULT_S)
    assert response.success, response.message  # ... and answering the service
    assert node.alive() and "republishing bodies" in node.log()
