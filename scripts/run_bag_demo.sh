#!/usr/bin/env bash
# Run the ivlm ROS 2 node on the bundled bag (test/data/ivlm_sample_bag) with YOUR InteractVLM weights and
# body models, writing everything it publishes to an output folder: an MCAP rosbag2 (<out>/mcap/, every topic
# the node publishes + the camera input, message definitions inside), contacts JSON/npy, debug PNGs, marker
# summaries, diagnostics, and with --rerun a Rerun recording (.rrd; needs rerun-sdk, requirements-viz.txt).
#
#   bash scripts/run_bag_demo.sh [--data DIR] [--model NAME] [--out DIR] [--device auto|cpu|cuda] [--compressed]
#                                [--rerun OUT.rrd]
#   bash scripts/run_bag_demo.sh --tiny-random-model     # plumbing smoke test: random weights, meaningless output
#
# Expected layout under --data (default: $IVLM_DATA or ~/ivlm_data):
#   trained_models/<model>/             InteractVLM release (default model: interactvlm-3d-hcontact-damon)
#   clip-vit-large-patch14/             openai/clip-vit-large-patch14 (config.json, weights, preprocessor)
#   body_models/smplx/SMPLX_NEUTRAL.npz, body_models/smplh/SMPLH_NEUTRAL.pkl, body_models/smpl_to_smplx.pkl
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${IVLM_DATA:-$HOME/ivlm_data}"
MODEL="interactvlm-3d-hcontact-damon"
OUT="$ROOT/out/ivlm_bag_demo"
DEVICE="auto"
EXTRA=()
TINY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data) DATA="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --compressed) EXTRA+=(--compressed); shift ;;
    --rerun) EXTRA+=(--rerun "$(realpath -m "$2")"); shift 2 ;;
    --tiny-random-model) TINY=1; shift ;;
    -h|--help) sed -n 2,15p "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

bash "$ROOT/scripts/setup_venv.sh"
# shellcheck source=scripts/ros_env.sh
source "$ROOT/scripts/ros_env.sh"
cd "$ROOT"

if [[ $TINY -eq 1 ]]; then
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  echo "[demo] building a tiny RANDOM model and synthetic body models in $TMP (outputs are meaningless)"
  python - "$TMP" <<'PY'
import sys
from ivlm_core.testing.tiny_checkpoint import build_tiny_checkpoint
from ivlm_core.testing.synthetic_body import write_synthetic_body_models
build_tiny_checkpoint(sys.argv[1] + "/tiny", "Gen")
write_synthetic_body_models(sys.argv[1] + "/body_models")
PY
  exec python -m ivlm_ros.bag_demo --checkpoint-dir "$TMP/tiny" --body-model-dir "$TMP/body_models" \
    --device cpu --out "$OUT" "${EXTRA[@]}"
fi

CKPT="$DATA/trained_models/$MODEL"
CLIP="$DATA/clip-vit-large-patch14"
BODY="$DATA/body_models"
missing=()
[[ -f "$CKPT/config.json" ]] || missing+=("checkpoint")
[[ -f "$CLIP/config.json" && -f "$CLIP/preprocessor_config.json" ]] || missing+=("clip")
compgen -G "$BODY/smplx/SMPLX_NEUTRAL.*" >/dev/null || missing+=("smplx")
compgen -G "$BODY/smplh/SMPLH_NEUTRAL.*" >/dev/null || missing+=("smplh")
[[ -f "$BODY/smpl_to_smplx.pkl" || -f "$BODY/smpl_to_smplx.npz" ]] || missing+=("transfer")
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "[demo] cannot run: files are missing under $DATA (set --data or IVLM_DATA to use another folder)." >&2
  for item in "${missing[@]}"; do
    case "$item" in
      checkpoint) echo "  - InteractVLM weights: register at https://interactvlm.is.tue.mpg.de (files are served" \
                       "from https://download.is.tue.mpg.de, domain 'interactvlm'), download '$MODEL.zip'" \
                       "(model zoo) and unzip it so that $CKPT/config.json exists." >&2 ;;
      clip) echo "  - CLIP ViT-L/14 (not inside the release): on a machine with internet run" \
                 "'huggingface-cli download openai/clip-vit-large-patch14 --local-dir $CLIP'" \
                 "(needs config.json, preprocessor_config.json and the weights)." >&2 ;;
      smplx) echo "  - SMPL-X: register at https://smpl-x.is.tue.mpg.de, download SMPL-X v1.1 (npz) and put" \
                  "SMPLX_NEUTRAL.npz at $BODY/smplx/SMPLX_NEUTRAL.npz." >&2 ;;
      smplh) echo "  - SMPL-H: register at https://mano.is.tue.mpg.de, download 'Extended SMPL+H model' and put" \
                  "SMPLH_NEUTRAL.pkl at $BODY/smplh/SMPLH_NEUTRAL.pkl." >&2 ;;
      transfer) echo "  - smpl_to_smplx.pkl: in the InteractVLM data.zip (same site as the weights) at" \
                     "data/smpl_to_smplx.pkl; copy it to $BODY/smpl_to_smplx.pkl." >&2 ;;
    esac
  done
  echo "[demo] (to check the ROS plumbing without weights: bash scripts/run_bag_demo.sh --tiny-random-model)" >&2
  exit 2
fi

exec python -m ivlm_ros.bag_demo --checkpoint-dir "$CKPT" --clip-dir "$CLIP" --body-model-dir "$BODY" \
  --device "$DEVICE" --out "$OUT" "${EXTRA[@]}"
