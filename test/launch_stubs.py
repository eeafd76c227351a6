"""Test scaffolding: minimal recording stand-ins for `launch`, `launch_ros` and `launch_testing`.

Those packages exist only on a real ROS install. These stand-ins implement just what `launch/ivlm.launch.py`
and `test/test_ros_launch.py` touch, recording what they are given, so the launch file's logic (which RViz
node, which config, which warning) and the launch test's skip can be checked here. Written to a folder and
put on sys.path (or PYTHONPATH of a subprocess) only by the tests that need them.
"""

from __future__ import annotations

from pathlib import Path

_FILES = {
    "launch/__init__.py": '''
class LaunchDescription:
    def __init__(self, entities=()):
        self.entities = list(entities)
''',
    "launch/actions.py": '''
class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

class DeclareLaunchArgument(_Recorded):
    pass

class IncludeLaunchDescription(_Recorded):
    pass

class OpaqueFunction(_Recorded):
    pass
''',
    "launch/logging.py": "from logging import getLogger as get_logger  # noqa: F401\n",
    "launch/substitutions.py": '''
class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]
''',
    "launch/launch_description_sources.py": '''
class PythonLaunchDescriptionSource:
    def __init__(self, path):
        self.path = path
''',
    "launch_ros/__init__.py": "",
    "launch_ros/actions.py": '''
class Node:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

class LifecycleNode(Node):
    pass
''',
    "launch_ros/parameter_descriptions.py": '''
class ParameterValue:
    def __init__(self, value, value_type=None):
        self.value, self.value_type = value, value_type
''',
    "launch_testing/__init__.py": '''
def post_shutdown_test():
    return lambda cls: cls
''',
    "launch_testing/actions.py": "class ReadyToTest:\n    pass\n",
    "launch_testing/asserts.py": "def assertExitCodes(*args, **kwargs):\n    pass\n",
    "launch_testing/markers.py": "def keep_alive(fn):\n    return fn\n",
}

STUB_MODULES = ("launch", "launch_ros", "launch_testing")


def write_launch_stubs(folder: Path) -> Path:
    """Write the stand-in packages under `folder` (a sys.path entry) and return it."""
    for name, text in _FILES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip("\n"))
    return folder


def write_ament_prefix(prefix: Path, packages: dict[str, list[str]]) -> Path:
    """A fake ament install prefix: each package registered, with executables {package: [names]} in lib/."""
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True, exist_ok=True)
    for package, executables in packages.items():
        (index / package).write_text("")
        (prefix / "share" / package).mkdir(parents=True, exist_ok=True)
        for exe in executables:
            path = prefix / "lib" / package / exe
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("#!/bin/sh\nexit 0\n")
            path.chmod(0o755)
    return prefix
