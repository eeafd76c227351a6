"""Health level and loss accounting of /diagnostics (issue 10, items 8 and 9), without a ROS graph."""

from __future__ import annotations

import inspect

import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from ivlm_ros.diagnostics import RECENT_FRAMES, RecentOutcomes, SequenceGapCounter, frame_health
from ivlm_ros.node import IvlmNode


def _outcomes(*oks: bool) -> RecentOutcomes:
    outcomes = RecentOutcomes()
    for i, ok in enumerate(oks):
        outcomes.record(ok, "" if ok else f"reason {i}")
    return outcomes


def test_health_levels_follow_the_recent_failure_rate() -> None:
    assert frame_health(_outcomes()) is None
    assert frame_health(_outcomes(True, True, True)) is None
    level, message = frame_health(_outcomes(False, False, False))
    assert level == DiagnosticStatus.ERROR and "every frame fails" in message and "reason 2" in message
    level, message = frame_health(_outcomes(False))  # too few frames to call it ERROR yet
    assert level == DiagnosticStatus.WARN
    level, message = frame_health(_outcomes(*([True] * 7), False, False, False))
    assert level == DiagnosticStatus.WARN and "3 of the last 10 frames failed; last: reason 9" in message
    assert frame_health(_outcomes(*([True] * 9), False)) is None  # 10 % is within the threshold


def test_the_window_forgets_old_frames() -> None:
    outcomes = _outcomes(*([False] * 5), *([True] * RECENT_FRAMES))
    assert outcomes.counts() == (RECENT_FRAMES, 0) and frame_health(outcomes) is None


@pytest.mark.parametrize(
    ("sequence", "lost"),
    [([1, 2, 3], 0), ([1, 4, 5, 9], 5), ([7, 8], 0), ([5, 6, 1, 3], 1), ([0, 0, None], 0)],
)
def test_sequence_gaps_count_frames_lost_before_the_callback(sequence: list, lost: int) -> None:
    counter = SequenceGapCounter()
    for number in sequence:
        counter.observe(number)
    assert counter.lost == lost


def test_the_image_callback_receives_the_message_info() -> None:
    """rclpy passes MessageInfo (the sequence numbers) only to callbacks that cannot be called with one
    argument, so the second parameter must not have a default."""
    bound = IvlmNode._on_image.__get__(object())
    with pytest.raises(TypeError):
        inspect.signature(bound).bind(object())
    inspect.signature(bound).bind(object(), {})


def _report(**changes):
    from ivlm_ros.component_status import ComponentMonitor
    from ivlm_ros.diagnostics import LoopMeter, NodeReport, Stats
    from ivlm_ros.parameters import settings_from_dict

    fields = dict(
        node_name="ivlm", lifecycle_state="active", error="", pipeline=None, settings=settings_from_dict({}),
        stats=Stats(), outcomes=RecentOutcomes(), monitor=ComponentMonitor(), body_loop=LoopMeter(),
        contact_loop=LoopMeter(), object_region="none", frames_lost_before_callback=0, frames_lost_dds_event=0,
        frames_dropped=3, frames_unpaired_dropped=1, contact_frames_skipped=0, service_queued=0,
        object_refits_on_motion=0, max_people=1, tf_backend="",
    )
    fields.update(changes)
    return NodeReport(**fields)


def test_the_model_status_level_follows_load_state_then_frame_health_then_truncation() -> None:
    from ivlm_ros.diagnostics import model_health

    loaded = object()
    assert model_health(_report(error="no weights"))[0] == DiagnosticStatus.ERROR
    assert model_health(_report())[1] == "node active: model not loaded"
    assert model_health(_report(pipeline=loaded, lifecycle_state="inactive"))[0] == DiagnosticStatus.WARN
    assert model_health(_report(pipeline=loaded)) == (DiagnosticStatus.OK, "active, 0 frames processed")
    truncated = _report(pipeline=loaded)
    truncated.stats.last_answer_status = "truncated: cut"
    assert model_health(truncated)[0] == DiagnosticStatus.WARN
    assert model_health(_report(pipeline=loaded, outcomes=_outcomes(False, False, False)))[0] == DiagnosticStatus.ERROR


def test_the_array_has_the_four_statuses_and_the_input_status_repeats_the_frame_counts() -> None:
    from builtin_interfaces.msg import Time

    from ivlm_ros.diagnostics import diagnostic_array, object_region

    report = _report(object_region=object_region(False, True, ""))
    report.stats.timings_ms["vlm"] = 2.0
    array = diagnostic_array(Time(sec=3), report)
    assert [s.name for s in array.status] == ["ivlm: model", "ivlm: input", "ivlm: body tracker", "ivlm: object fit"]
    model = {kv.key: kv.value for kv in array.status[0].values}
    assert model["object_region"] == "box" and model["timing_ms_vlm"] == "2.000" and model["republish_failed"] == "0"
    inputs = {kv.key: kv.value for kv in array.status[1].values}
    assert inputs["frames_dropped"] == "3" and inputs["frames_unpaired_dropped"] == "1"
    assert [object_region(True, True, "1,2,3,4"), object_region(False, False, " 1,2,3,4 ")] == ["mask", "box parameter"]
