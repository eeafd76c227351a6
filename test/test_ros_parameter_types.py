"""Numbers in the 'other' type: ``max_rate_hz: 2`` (int for a float) and ``queue_size: 5.0`` (integral float for
an int) must start the real node, from YAML and from ``-p``, and be stored in the parameter's own type; only a
really wrong value is refused, with the reason (issue 10, item 4).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ivlm_ros.parameters import PARAMETERS
from ivlm_ros.testing.node_harness import NodeProcess, Probe

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NUMERIC = [spec for spec in PARAMETERS if spec.numeric]


def _other_type_value(spec) -> int | float | None:
    """A valid value of the parameter written in the other numeric type (None: no whole number is valid)."""
    if spec.kind is int:
        return float(spec.default)
    for candidate in (int(spec.default), 1, 2, 0):
        if spec.check(candidate) is None:
            return candidate
    return None  # e.g. the thresholds: (0, 1) holds no whole number, so an int there is really wrong


OTHER_TYPE = {spec.name: _other_type_value(spec) for spec in NUMERIC}
SENDABLE = {name: value for name, value in OTHER_TYPE.items() if value is not None}


def test_every_numeric_parameter_is_covered() -> None:
    assert {"max_rate_hz", "queue_size", "max_new_tokens", "diagnostics_period_s"} <= set(SENDABLE)
    assert set(OTHER_TYPE) - set(SENDABLE) == {"human_threshold", "object_threshold"}
    kinds = {spec.name: spec.kind for spec in NUMERIC}
    assert all(type(value) is (float if kinds[name] is int else int) for name, value in SENDABLE.items())


def _start(tmp_path: Path, name: str, via: str) -> NodeProcess:
    base = {"autostart": False, "diagnostics_period_s": 0.25}
    if via == "yaml":
        params_file = tmp_path / "params.yaml"
        values = {**base, **SENDABLE}
        params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
        text = params_file.read_text()
        assert "max_rate_hz: 0\n" in text and "queue_size: 5.0\n" in text  # really the other YAML types
        return NodeProcess({}, tmp_path / "node.log", name=name, params_file=params_file)
    return NodeProcess({**base, **SENDABLE}, tmp_path / "node.log", name=name)


@pytest.fixture(scope="module")
def probe(ros_context) -> Iterator[Probe]:
    p = Probe()
    yield p
    p.destroy()


@pytest.mark.parametrize("via", ["yaml", "cli"])
def test_other_numeric_types_start_the_node_and_are_stored_converted(
    probe: Probe, tmp_path: Path, via: str
) -> None:
    name = f"ivlm_types_{via}"
    node = _start(tmp_path, name, via)
    try:
        try:
            stored = probe.get_parameters(f"/{name}", sorted(SENDABLE))
        except AssertionError:
            raise AssertionError(f"node did not come up:\n{node.log()[-3000:]}") from None
        assert node.alive(), node.log()[-3000:]
        for spec in NUMERIC:
            if spec.name not in SENDABLE:
                continue
            value = stored[spec.name]
            assert type(value) is spec.kind, (spec.name, value)
            assert value == SENDABLE[spec.name], spec.name
        assert "InvalidParameterTypeException" not in node.log()
        # and at run time: an int for a float parameter is stored as a float
        result = probe.set_parameter(f"/{name}", "max_rate_hz", 3)
        assert result.successful, result.reason
        assert probe.get_parameters(f"/{name}", ["max_rate_hz"])["max_rate_hz"] == 3.0
        assert type(probe.get_parameters(f"/{name}", ["max_rate_hz"])["max_rate_hz"]) is float
        refused = probe.set_parameter(f"/{name}", "queue_size", 2.5)
        assert not refused.successful and "must be an integer, got 2.5" in refused.reason
        refused = probe.set_parameter(f"/{name}", "max_rate_hz", "fast")
        assert not refused.successful and "must be a number" in refused.reason
    finally:
        assert node.stop() == 0, node.log()[-3000:]


def test_a_really_wrong_number_is_a_clear_error_not_a_crash(probe: Probe, tmp_path: Path) -> None:
    name = "ivlm_types_bad"
    node = NodeProcess({"autostart": False, "queue_size": 2.5, "human_threshold": 1}, tmp_path / "node.log",
                       name=name)
    try:
        probe.get_parameters(f"/{name}", ["queue_size"])  # the node is up and answers
        assert node.alive()
        log = node.log()
        assert "parameter 'queue_size' must be an integer, got 2.5" in log, log[-3000:]
        assert "parameter 'human_threshold' must be in (0.0, 1.0); got 1" in log, log[-3000:]
        assert "Traceback" not in log
    finally:
        assert node.stop() == 0, node.log()[-3000:]
