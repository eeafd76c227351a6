"""Parameter validation without ROS, and the shipped config/ivlm.yaml against it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from ivlm_core.errors import InvalidInputError
from ivlm_core.pipeline_config import PipelineConfig
from ivlm_ros.parameters import (
    PARAMETERS,
    NodeSettings,
    pipeline_config_problem,
    settings_from_dict,
    validate_parameter,
)

CONFIG = Path(__file__).resolve().parents[1] / "config" / "ivlm.yaml"


def test_every_parameter_has_a_settings_field_a_description_and_a_valid_default() -> None:
    assert [f.name for f in dataclasses.fields(NodeSettings)] == [p.name for p in PARAMETERS]
    for spec in PARAMETERS:
        assert spec.description
        assert validate_parameter(spec.name, spec.default) is None, spec.name


def test_shipped_yaml_sets_every_parameter_with_valid_values() -> None:
    values = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]
    assert set(values) == {p.name for p in PARAMETERS}
    settings = settings_from_dict(values)
    assert settings.task == "human_contact" and settings.image_topic == "/camera/color/image_raw"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("human_threshold", 1.0, "(0.0, 1.0)"),
        ("object_threshold", -0.1, "(0.0, 1.0)"),
        ("human_threshold", float("nan"), "finite"),
        ("human_threshold", True, "number"),
        ("task", "segment_everything", "human_contact"),
        ("device", "tpu", "cuda"),
        ("dtype", "int8", "bfloat16"),
        ("max_new_tokens", 0, "[1, 2048]"),
        ("max_new_tokens", 2.5, "integer"),
        ("queue_size", 1000, "[1, 100]"),
        ("max_rate_hz", -1.0, "[0.0, 1000.0]"),
        ("sync_slop_s", 0.0, "(0.0, 1.0]"),
        ("body_params_slop_s", -0.01, "[0.0, 1.0]"),
        ("body_params_timeout_s", 0.0, "(0.0, 60.0]"),
        ("body_params_wait_s", 6.0, "[0.0, 5.0]"),
        ("image_topic", "/camera/1color", "bad part"),
        ("image_topic", "", "non-empty"),
        ("image_topic", "/cam\x1b[2J", "'/cam\\x1b[2J' is not a valid topic name"),  # shown escaped
        ("query_topic", "~/", "no name"),
        ("object_query", "   ", "non-empty object name"),
        ("object_query", "x" * 101, "at most 100"),
        ("marker_colormap", "jet", "viridis"),
        ("input_reliability", "sometimes", "reliable"),
        ("use_compressed", "yes", "true or false"),
        ("checkpoint_dir", 3, "string path"),
        ("checkpoint_dir", "/data/\x1b[31mckpt", "control characters"),
        ("body_model_dir", "/data\rforged", "control characters"),
        ("no_such_parameter", 1, "unknown parameter"),
    ],
)
def test_invalid_values_are_rejected_with_a_reason(name: str, value: object, fragment: str) -> None:
    reason = validate_parameter(name, value)
    assert reason is not None and fragment in reason, reason
    assert name in reason


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("image_topic", "camera/image"),
        ("image_topic", "~/image"),
        ("query_topic", "/a/b_c/d2"),
        ("device", "cuda"),
        ("body_params_slop_s", 0.0),
        ("body_params_timeout_s", 0.5),
    ],
)
def test_valid_values_pass(name: str, value: object) -> None:
    assert validate_parameter(name, value) is None


def test_settings_from_dict_lists_every_problem_and_coerces_numbers() -> None:
    with pytest.raises(InvalidInputError) as info:
        settings_from_dict({"human_threshold": 2.0, "task": "x", "bogus": 1})
    message = str(info.value)
    assert "human_threshold" in message and "task" in message and "unknown parameter 'bogus'" in message
    settings = settings_from_dict({"max_rate_hz": 5, "queue_size": 3.0})
    assert isinstance(settings.max_rate_hz, float) and isinstance(settings.queue_size, int)


def test_cross_parameter_rules_come_from_the_pipeline_config() -> None:
    with pytest.raises(InvalidInputError, match="object_library"):
        settings_from_dict({"task": "interaction"})
    with pytest.raises(InvalidInputError, match="simple"):
        settings_from_dict({"generate": False, "question_template": "parts"})
    ok = settings_from_dict({"generate": False, "question_template": "simple"})
    assert pipeline_config_problem(ok) is None
    assert pipeline_config_problem(ok.replace(task="object_contact")) is not None


def test_pipeline_config_dict_maps_empty_paths_to_none() -> None:
    settings = settings_from_dict({"checkpoint_dir": "/w/ckpt", "body_model_dir": "/w/body"})
    config = PipelineConfig.from_dict(settings.pipeline_config_dict())
    assert config.checkpoint_dir == "/w/ckpt" and config.body_model_dir == "/w/body"
    assert config.clip_dir is None and config.smpl_to_smplx is None and config.object_library is None


def test_the_ros_readme_documents_every_parameter() -> None:
    readme = (Path(__file__).resolve().parents[1] / "ivlm_ros" / "README.md").read_text()
    missing = [p.name for p in PARAMETERS if f"| `{p.name}` |" not in readme]
    assert not missing, f"add these parameters to the table in ivlm_ros/README.md: {missing}"


def test_object_box_parameter_parses_and_rejects() -> None:
    from ivlm_ros.parameters import parse_box

    assert parse_box("") is None and parse_box("  ") is None
    assert parse_box("10, 20, 110.5, 220") == (10.0, 20.0, 110.5, 220.0)
    assert validate_parameter("object_box", "10,20,110,220") is None
    for bad in ("10,20,5,220", "1,2,3", "a,b,c,d", "0,0,nan,4"):
        reason = validate_parameter("object_box", bad)
        assert reason is not None and "x0,y0,x1,y1" in reason, bad
    assert "string" in validate_parameter("object_box", 5)
