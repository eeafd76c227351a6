"""Plain-Python helpers of `launch/ivlm.launch.py`: RViz lookup and the RViz config rendered for a namespace.

`launch` and `launch_ros` exist only on a real ROS install, so everything the launch file decides (is rviz2
there? which topics does RViz show for this namespace and image topic?) lives here, importable and tested
without them.
"""

from __future__ import annotations

import os
import shutil
import string
import tempfile
from pathlib import Path

from ivlm_core.errors import InvalidInputError

NODE_NAME = "ivlm"  # the name launch gives the node; its private (~/) topics live under it
RVIZ_PACKAGE = "rviz2"
RVIZ_TEMPLATE_NAME = "ivlm.rviz.template"
RVIZ_RELIABILITY = {"best_effort": "Best Effort", "reliable": "Reliable"}


def launch_flag(name: str, value: str) -> bool:
    """A boolean launch argument, read as launch's IfCondition reads it ('true'/'false'/'1'/'0')."""
    text = value.strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise InvalidInputError(f"launch argument {name}:={value!r} must be true or false")


def find_rviz2() -> Path | None:
    """The rviz2 executable (ament index first, as `ros2 launch` finds it, then PATH), or None."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:  # no ament index at all: only PATH can tell
        pass
    else:
        try:
            candidate = Path(get_package_prefix(RVIZ_PACKAGE)) / "lib" / RVIZ_PACKAGE / "rviz2"
        except PackageNotFoundError:
            candidate = None
        if candidate is not None and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("rviz2")
    return Path(found) if found else None


def _clean_namespace(namespace: str) -> str:
    parts = [p for p in namespace.strip().split("/") if p]
    for part in parts:
        if not (part[0].isalpha() or part[0] == "_") or not all(c.isalnum() or c == "_" for c in part):
            raise InvalidInputError(
                f"namespace {namespace!r} is not a valid ROS namespace (letters, digits and '_', "
                "each segment starting with a letter or '_')")
    return "/" + "/".join(parts) if parts else ""


def resolve_topic(name: str, namespace: str = "", node_name: str = NODE_NAME) -> str:
    """The absolute topic a node named `node_name` in `namespace` uses for `name` (ROS 2 name rules).

    '/abs' stays as it is, 'rel' goes under the namespace, '~/private' under the namespace and the node name.
    """
    name = name.strip()
    if not name:
        raise InvalidInputError("an empty topic name cannot be resolved")
    ns = _clean_namespace(namespace)
    if name.startswith("/"):
        return name
    if name.startswith("~"):
        rest = name[1:].lstrip("/")
        return f"{ns}/{node_name}" + (f"/{rest}" if rest else "")
    return f"{ns}/{name}"


def rviz_topics(namespace: str = "", image_topic: str = "/camera/color/image_raw",
                input_reliability: str = "best_effort") -> dict[str, str]:
    """The template's placeholder values for a node launched in `namespace` reading `image_topic`."""
    if input_reliability not in RVIZ_RELIABILITY:
        raise InvalidInputError(
            f"input_reliability must be one of {sorted(RVIZ_RELIABILITY)}, got {input_reliability!r}")
    return {
        "markers_topic": resolve_topic("~/markers", namespace),
        "object_pose_topic": resolve_topic("~/object_pose", namespace),
        "debug_image_topic": resolve_topic("~/debug_image", namespace),
        "image_topic": resolve_topic(image_topic, namespace),
        "image_reliability": RVIZ_RELIABILITY[input_reliability],
    }


def render_rviz_config(template: str, values: dict[str, str]) -> str:
    """The template with its comment header dropped and every $-placeholder filled (a missing one raises)."""
    body = "\n".join(line for line in template.splitlines() if not line.startswith("#")) + "\n"
    try:
        return string.Template(body).substitute(values)
    except KeyError as err:
        raise InvalidInputError(f"RViz template placeholder ${err.args[0]} has no value") from None
    except ValueError as err:
        raise InvalidInputError(f"RViz template is malformed: {err}") from None


def write_rviz_config(config_path: str | Path, namespace: str, image_topic: str, input_reliability: str,
                      out_dir: str | Path | None = None) -> Path:
    """Render `config_path` (a template or a plain .rviz) for this launch into a fresh file; returns its path.

    A plain .rviz without placeholders comes out unchanged, so a user's own `rviz_config` keeps working.
    """
    source = Path(config_path)
    if not source.is_file():
        raise InvalidInputError(f"rviz_config {str(source)!r} does not exist")
    text = render_rviz_config(source.read_text(), rviz_topics(namespace, image_topic, input_reliability))
    folder = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="ivlm_rviz_"))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "ivlm.rviz"
    target.write_text(text)
    return target
