"""Diagnostics for the robot's aggregator: component status names, units in keys, the shipped analyzer config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ivlm_core.pipeline import BodyPlacement, InteractionResult, ObjectPlacement

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
ANALYZERS = REPO / "config" / "ivlm_analyzers.yaml"


def _published_statuses(node_name: str = "ivlm") -> list:
    """Every status the node publishes (model + components), built by the node's own functions."""
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus

    from ivlm_ros.component_status import ComponentMonitor
    from ivlm_ros.messages import diagnostics_msg
    from ivlm_ros.parameters import settings_from_dict

    monitor = ComponentMonitor()
    model = diagnostics_msg(Time(), node_name, DiagnosticStatus.OK, "ok", {"latency_ms_last": 1.0}, "cpu")
    return list(model.status) + monitor.statuses(node_name, settings_from_dict({}), True, {}, "tf2_msgs")


def _generic_analyzers() -> dict[str, dict]:
    params = yaml.safe_load(ANALYZERS.read_text())["/**"]["ros__parameters"]
    (group,) = params.values()
    assert group["type"] == "diagnostic_aggregator/AnalyzerGroup"
    return group["analyzers"]


def test_statuses_are_named_per_component() -> None:
    from ivlm_ros.component_status import COMPONENTS

    names = [s.name for s in _published_statuses()]
    assert names == [f"ivlm: {c}" for c in COMPONENTS] == ["ivlm: model", "ivlm: input", "ivlm: body tracker",
                                                            "ivlm: object fit"]  # fmt: skip


def test_every_published_status_falls_under_exactly_one_analyzer() -> None:
    analyzers = _generic_analyzers()
    assert {a["path"] for a in analyzers.values()} == {"Model", "Input", "Body tracker", "Object fit"}
    for status in _published_statuses():
        matching = [
            a["path"] for a in analyzers.values()
            if a["type"] == "diagnostic_aggregator/GenericAnalyzer"
            and any(status.name.startswith(prefix) for prefix in a["startswith"])
        ]  # fmt: skip
        assert len(matching) == 1, (status.name, matching)
        assert matching[0].lower() == status.name.split(": ", 1)[1]
        for analyzer in analyzers.values():
            for prefix in analyzer["remove_prefix"]:
                assert status.name.startswith(prefix)  # the group shows 'model', not 'ivlm: model'


def test_rates_and_latencies_carry_their_unit_in_the_key() -> None:
    keys = {kv.key for s in _published_statuses() for kv in s.values}
    timed = {k for k in keys if re.search(r"(^|_)(rate|latency|age|time|distance)(_|$)", k)}
    assert {"input_rate_hz", "processing_rate_hz", "latency_ms_last", "fit_time_ms_last"} <= timed
    assert all(re.search(r"(^|_)(hz|ms|s|m)(_|$)", k) for k in timed), timed


def test_fit_counters_and_levels() -> None:
    from diagnostic_msgs.msg import DiagnosticStatus

    from ivlm_ros.component_status import ComponentMonitor
    from ivlm_ros.parameters import settings_from_dict

    monitor = ComponentMonitor()
    settings = settings_from_dict({"fit_human": True})
    placed = ObjectPlacement(True, "ok", report={"fit_time_s": 0.25, "contact_distance_m": 0.01})
    monitor.record_result(InteractionResult("cup", "interaction", None, None, None, BodyPlacement(True, "ok"), placed))
    monitor.record_result(InteractionResult("cup", "interaction", None, None, None, BodyPlacement(False, "no K"), None))
    _, body, obj = monitor.statuses("ivlm", settings, True, {}, "tf2_msgs")
    body_values = {kv.key: kv.value for kv in body.values}
    assert body.level == DiagnosticStatus.WARN and "no K" in body.message  # the last frame had no body
    assert (body_values["fits_attempted"], body_values["fits_placed"]) == ("2", "1")
    obj_values = {kv.key: kv.value for kv in obj.values}
    assert obj.level == DiagnosticStatus.OK and obj_values["fit_time_ms_last"] == "250.000"


def test_rate_meter_counts_the_last_window() -> None:
    from ivlm_ros.component_status import RateMeter

    meter = RateMeter(window_s=2.0)
    for t in (0.0, 0.5, 1.0, 1.5, 2.0):
        meter.tick(100.0 + t)
    assert meter.rate_hz(102.0) == pytest.approx(2.5)  # 5 events in the last 2 s
    assert meter.rate_hz(103.2) == pytest.approx(1.0)  # events from 101.5 on
    assert meter.last_age_s(103.0) == pytest.approx(1.0)


def test_setup_installs_the_analyzer_config() -> None:
    setup = (REPO / "setup.py").read_text()
    assert 'glob("config/*.yaml")' in setup and ANALYZERS.parent.name == "config"
