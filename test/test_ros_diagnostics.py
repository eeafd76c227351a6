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
