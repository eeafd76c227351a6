"""The ROS-free core must stay importable without any ROS module."""

import subprocess
import sys


def test_ivlm_core_imports_no_ros() -> None:
    code = (
        "import sys, importlib, pkgutil, ivlm_core\n"
        "for m in pkgutil.walk_packages(ivlm_core.__path__, 'ivlm_core.'):\n"
        "    if '.bench.' in m.name: continue\n"
        "    importlib.import_module(m.name)\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in ('rclpy', 'rosidl_runtime_py', 'ivlm_msgs', "
        "'sensor_msgs', 'std_msgs')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
