#!/usr/bin/env bash
# The ROS message wheels' exported CMake targets hard-code the wheel build host's Python and numpy
# include directories (/opt/python/cp3XX-.../include, .../numpy/_core/include); CMake refuses to
# configure against them. Point them at this venv's own include directories instead.
set -euo pipefail
VENV="${1:?usage: fix_ros_wheel_cmake.sh VENV}"
PYINC=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
NPINC=$("$VENV/bin/python" -c "import numpy; print(numpy.get_include())")
{ grep -rl '/opt/python/cp3' "$VENV/share" --include='*.cmake' 2>/dev/null || true; } | while read -r f; do
  sed -i -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/include/python3\.[0-9]*#$PYINC#g" \
         -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/lib/python3\.[0-9]*/site-packages/numpy/_core/include#$NPINC#g" "$f"
done
