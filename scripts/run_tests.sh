#!/usr/bin/env bash
# Run the whole test suite (lint + pytest) in the project venv; sets the venv up first if needed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_venv.sh
# shellcheck source=scripts/ros_env.sh
source scripts/ros_env.sh
echo "[tests] ruff check"
ruff check .
echo "[tests] pytest (ROS_DOMAIN_ID=$ROS_DOMAIN_ID, discovery LOCALHOST)"
set +e
python -m pytest "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "[tests] pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit $rc
