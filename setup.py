"""ament_python package ivlm_ros (the repo root): the ROS 2 node plus the ROS-free ivlm_core library.

The typed interfaces live in the separate rosidl package msg/ (ivlm_msgs); build both with
``colcon build --base-paths <repo> <repo>/msg``.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "ivlm_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["ivlm_ros", "ivlm_ros.*", "ivlm_core", "ivlm_core.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.rviz.template")),
        # launch and `ros2 run` look for executables in lib/<package>/, not in bin/
        (f"lib/{PACKAGE}", ["resource/ivlm_node"]),
    ],
    install_requires=["setuptools"],
    # Optional Rerun viewer output (--rerun out.rrd); pinned in requirements-viz.txt.
    extras_require={"rerun": ["rerun-sdk==0.41.0"]},
    zip_safe=False,
    maintainer="ivlm maintainers",
    maintainer_email="ivlm@example.com",
    description="InteractVLM human/object contact estimation as a ROS 2 lifecycle node",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "ivlm_node = ivlm_ros.node:main",
            "ivlm = ivlm_core.cli:main",
        ]
    },
)
