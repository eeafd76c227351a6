"""launch/ivlm.launch.py and its helpers, without a real launch install.

`launch`, `launch_ros` and `launch_testing` exist only on real ROS installs; here the launch file is read with
`ast` (argument descriptions), run against recording stand-ins (test/launch_stubs.py) with a fake ament prefix
(which RViz node, which config, which warning), and its pure helpers (ivlm_ros/launch_support.py) are
called directly.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from launch_stubs import STUB_MODULES, write_ament_prefix, write_launch_stubs

from ivlm_core.errors import InvalidInputError
from ivlm_ros.launch_support import (
    launch_flag,
    render_rviz_config,
    resolve_topic,
    rviz_topics,
    write_rviz_config,
)

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "ivlm.launch.py"
TEMPLATE = REPO / "config" / "ivlm.rviz.template"
MIN_DESCRIPTION_WORDS = 6


# ------------------------------------------------------------------------------------------------ arguments
def _declared_arguments() -> dict[str, str | None]:
    """name -> description (None when absent) of every DeclareLaunchArgument call in the launch file."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    found: dict[str, str | None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            name = ast.literal_eval(node.args[0])
            description = next((k.value for k in node.keywords if k.arg == "description"), None)
            found[name] = None if description is None else ast.literal_eval(description)
    return found


def test_every_launch_argument_has_a_full_description_and_is_listed_in_the_docstring() -> None:
    arguments = _declared_arguments()
    assert {"namespace", "config_file", "image_topic", "camera_info_topic", "use_compressed",
            "input_reliability", "autostart", "rviz", "rviz_config"} <= set(arguments)  # fmt: skip
    short = {name: text for name, text in arguments.items()
             if text is None or len(text.split()) < MIN_DESCRIPTION_WORDS}  # fmt: skip
    assert not short, f"launch arguments without a full description: {short}"
    docstring = ast.get_docstring(ast.parse(LAUNCH_FILE.read_text()))
    listed = {line.split()[0] for line in docstring.splitlines() if line.startswith("  ") and line.split()
              and not line.startswith("   ")}  # fmt: skip
    assert set(arguments) <= listed, f"not listed in the module docstring: {set(arguments) - listed}"
    assert "'reliable'" in arguments["input_reliability"] and "'best_effort'" in arguments["input_reliability"]


# ------------------------------------------------------------------------------------------------ the launch file
@pytest.fixture()
def launch_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The launch file imported against the stand-ins, with a fake ament prefix holding only ivlm_ros."""
    monkeypatch.syspath_prepend(str(write_launch_stubs(tmp_path / "stubs")))
    prefix = write_ament_prefix(tmp_path / "install", {"ivlm_ros": ["ivlm_node"]})
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    monkeypatch.setenv("PATH", str(tmp_path / "empty_bin"))  # no rviz2 on PATH either
    spec = importlib.util.spec_from_file_location("ivlm_launch_under_test", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        yield SimpleNamespace(module=module, prefix=prefix)
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] in STUB_MODULES]:
            del sys.modules[name]


def _context(**overrides: str) -> SimpleNamespace:
    values = {"rviz": "true", "namespace": "", "image_topic": "/camera/color/image_raw",
              "input_reliability": "best_effort", "rviz_config": str(TEMPLATE)}  # fmt: skip
    values.update(overrides)
    return SimpleNamespace(launch_configurations=values)


def _run_rviz_function(description, context) -> list:
    """Call the launch file's OpaqueFunction(s) as launch would, at launch time with these arguments."""
    from launch.actions import OpaqueFunction

    opaque = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    assert opaque, "RViz must be decided in an OpaqueFunction (rviz2 looked up at launch time)"
    return [action for o in opaque for action in o.kwargs["function"](context)]


def _nodes(entities, package: str) -> list:
    return [e for e in entities if hasattr(e, "kwargs") and e.kwargs.get("package") == package]


def test_without_rviz2_the_launch_warns_and_starts_the_node_alone(launch_module, caplog) -> None:
    description = launch_module.module.generate_launch_description()
    assert len(_nodes(description.entities, "ivlm_ros")) == 1
    assert not _nodes(description.entities, "rviz2"), "an unconditional rviz2 node fails launch without rviz2"
    with caplog.at_level(logging.WARNING):
        started = _run_rviz_function(description, _context())
    assert started == []
    assert "rviz2 is not installed" in caplog.text and "without RViz" in caplog.text


def test_rviz_off_starts_nothing_and_a_bad_flag_only_warns(launch_module, caplog) -> None:
    description = launch_module.module.generate_launch_description()
    assert _run_rviz_function(description, _context(rviz="false")) == []
    with caplog.at_level(logging.WARNING):
        assert _run_rviz_function(description, _context(rviz="maybe")) == []
    assert "rviz:='maybe' must be true or false" in caplog.text


def test_with_rviz2_the_config_follows_the_namespace_and_topics(launch_module) -> None:
    write_ament_prefix(launch_module.prefix, {"rviz2": ["rviz2"]})
    description = launch_module.module.generate_launch_description()
    context = _context(namespace="robot1", image_topic="camera/image", input_reliability="reliable")
    (rviz,) = _run_rviz_function(description, context)
    assert rviz.kwargs["package"] == "rviz2" and rviz.kwargs["namespace"] == "robot1"
    flag, config = rviz.kwargs["arguments"]
    assert flag == "-d"
    displays = yaml.safe_load(Path(config).read_text())["Visualization Manager"]["Displays"]
    topics = {d["Name"]: d["Topic"] for d in displays if "Topic" in d}
    assert topics["Contacts"]["Value"] == "/robot1/ivlm/markers"
    assert topics["Object pose"]["Value"] == "/robot1/ivlm/object_pose"
    assert topics["Debug image"]["Value"] == "/robot1/ivlm/debug_image"
    assert topics["Camera image"]["Value"] == "/robot1/camera/image"
    assert topics["Camera image"]["Reliability Policy"] == "Reliable"


# ------------------------------------------------------------------------------------------------ helpers
def test_topic_resolution_follows_ros_name_rules() -> None:
    assert resolve_topic("~/markers", "") == "/ivlm/markers"
    assert resolve_topic("~/markers", "/robot1/") == "/robot1/ivlm/markers"
    assert resolve_topic("/camera/color/image_raw", "robot1") == "/camera/color/image_raw"
    assert resolve_topic("camera/image", "a/b") == "/a/b/camera/image"
    with pytest.raises(InvalidInputError, match="not a valid ROS namespace"):
        resolve_topic("~/markers", "1robot")
    with pytest.raises(InvalidInputError, match="input_reliability"):
        rviz_topics(input_reliability="sometimes")
    assert launch_flag("rviz", "True") and not launch_flag("rviz", "0")


def test_shipped_ivlm_rviz_is_the_template_rendered_with_the_launch_defaults() -> None:
    rendered = render_rviz_config(TEMPLATE.read_text(), rviz_topics())
    assert "$" not in rendered
    assert rendered == (REPO / "config" / "ivlm.rviz").read_text()
    assert "/ivlm/markers" in rendered and "/camera/color/image_raw" in rendered


def test_template_errors_name_the_placeholder_and_plain_configs_pass_through(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"\$unknown_topic"):
        render_rviz_config("Value: ${unknown_topic}\n", rviz_topics())
    plain = tmp_path / "mine.rviz"
    plain.write_text("Panels: []\nVisualization Manager:\n  Class: ''\n")
    out = write_rviz_config(plain, "robot1", "/cam", "reliable", out_dir=tmp_path / "out")
    assert out.read_text() == plain.read_text()
    with pytest.raises(InvalidInputError, match="does not exist"):
        write_rviz_config(tmp_path / "absent.rviz", "", "/cam", "reliable", out_dir=tmp_path / "out")


# ------------------------------------------------------------------------------------------------ test_ros_launch
def test_launch_test_skips_with_the_reason_when_ivlm_ros_is_not_colcon_installed(tmp_path: Path) -> None:
    """launch_testing present, ivlm_ros not in the ament index: the module skips and says why."""
    stubs = write_launch_stubs(tmp_path / "stubs")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(stubs), str(REPO)])
    env["AMENT_PREFIX_PATH"] = str(write_ament_prefix(tmp_path / "install", {}))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", "-rs",
         str(REPO / "test" / "test_ros_launch.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode in (0, 5), output  # 5: no tests collected
    assert "SKIPPED [1]" in output and "ivlm_ros is not installed with colcon" in output, output
