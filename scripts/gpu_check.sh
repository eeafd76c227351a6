#!/usr/bin/env bash
# One command that proves the GPU path on a bare CUDA machine (H100/H200) in <= 8 minutes, and prints one summary.
#
#   bash scripts/gpu_check.sh                 # run everything (needs a CUDA GPU)
#   bash scripts/gpu_check.sh --dry-run       # list the steps and check the tree has what they need (any machine)
#   bash scripts/gpu_check.sh --wheels DIR    # first install missing Python packages offline from DIR (see below)
#   bash scripts/gpu_check.sh --steps probe,cuda_tests,bench_bf16   # only these steps (a rerun after a fix)
#   bash scripts/gpu_check.sh --steps probe,decode_profile            # where a decode step's time goes (not run
#                                             # by default: ~2 minutes; see ivlm_core/bench/decode_profile.py)
#   bash scripts/gpu_check.sh --fetch-wheels DIR --python-version 3.10,3.11,3.12 pytest pluggy iniconfig ...
#                                             # on a machine WITH PyPI: download those packages' pinned wheels
#
# It uses the machine's own torch/transformers (nothing is installed from the network; the GPU machine may have
# none). Python: $IVLM_PYTHON, else ./.venv/bin/python when it imports torch, else python3. When a module the
# steps need is missing it says which, with the pinned version from requirements*.txt; give `--wheels DIR` (a
# folder of wheels made with --fetch-wheels for that machine's Python) to install them (pip --target, offline)
# into a folder put on PYTHONPATH, so the system torch stays the one imported. ROS is not needed and not touched.
#
# Steps (each under its own timeout; a global budget keeps the whole run under 8 minutes):
#   probe       python, torch/CUDA/GPU, transformers, torchao, missing modules
#   cuda_tests  pytest -m cuda test/test_model_decoding.py test/test_model_drafting.py
#               test/test_geometry_point_lifting.py (CUDA-graph decoding and graph-captured draft-and-verify ==
#               eager/plain, fp32 + bf16; point-cloud lifting on CUDA == CPU)
#   bench_bf16  python -m ivlm_core.bench.model_latency --draft (13B-size LLaMA + ViT-L CLIP + SAM ViT-H, random bf16;
#               then draft-and-verify decoding on a wired template answer: forwards_per_answer, drafted vs plain)
#   pipeline    python -m ivlm_core.bench.pipeline_samples (interaction pipeline on test/data/samples, tiny model)
#   bench_int4  model_latency --quant int4 (only when torchao imports)
#   bench_int8  model_latency --quant int8 (only when torchao imports)
# Logs: ${OUT:-out}/gpu_check/<step>.log; the summary is printed last (and saved as summary.txt there).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DRY_RUN=0
WHEELS="${IVLM_WHEELS:-}"
FETCH=""
PYVER=""
FETCH_PKGS=()
ONLY_STEPS=""
BUDGET_S="${IVLM_GPU_CHECK_BUDGET_S:-460}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --wheels) WHEELS="$2"; shift ;;
    --fetch-wheels) FETCH="$2"; shift ;;
    --python-version) PYVER="$2"; shift ;;
    --budget-s) BUDGET_S="$2"; shift ;;
    --steps) ONLY_STEPS=",$2,"; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) FETCH_PKGS+=("$1") ;;
  esac
  shift
done

# module -> pip package (pinned from requirements*.txt); torch/transformers/triton are the machine's own.
MODULES="numpy:numpy scipy:scipy sentencepiece:sentencepiece safetensors:safetensors PIL:pillow numba:numba \
llvmlite:llvmlite trimesh:trimesh yaml:pyyaml smplx:smplx pytest:pytest pluggy:pluggy iniconfig:iniconfig \
tokenizers:tokenizers torchao:torchao"

pin_of() {  # pinned requirement line of a package, or the bare name
  local line
  line="$(grep -hiE "^$1==" requirements.txt requirements-dev.txt 2>/dev/null | head -n1)"
  echo "${line:-$1}"
}

if [ -n "$FETCH" ]; then
  [ -n "$PYVER" ] || { echo "gpu_check: --fetch-wheels needs --python-version X.Y (the GPU machine's; the probe prints it)" >&2; exit 2; }
  [ ${#FETCH_PKGS[@]} -gt 0 ] || { echo "gpu_check: name the packages to fetch (the probe lists the missing ones)" >&2; exit 2; }
  mkdir -p "$FETCH"
  pins=()
  for p in "${FETCH_PKGS[@]}"; do pins+=("$(pin_of "$p")"); done
  status=0
  for ver in ${PYVER//,/ }; do  # one or more Python versions, comma-separated
    echo "downloading ${pins[*]} for Python $ver (manylinux x86_64) into $FETCH"
    for pin in "${pins[@]}"; do
      python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$ver" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d "$FETCH" "$pin" 2>/dev/null || { echo "  no wheel of $pin for Python $ver"; status=1; }
    done
  done
  du -sh "$FETCH"
  exit $status
fi

# ---------------------------------------------------------------------------------------------- interpreter
pick_python() {
  if [ -n "${IVLM_PYTHON:-}" ]; then echo "$IVLM_PYTHON"; return; fi
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" >/dev/null 2>&1; then echo ".venv/bin/python"; return; fi
  command -v python3 || command -v python || echo python3
}
PY="$(pick_python)"

missing_modules() {  # prints "module:package" for every module $PY cannot import
  "$PY" - "$MODULES" <<'EOF' 2>/dev/null
import importlib.util, sys
for pair in sys.argv[1].split():
    mod, pkg = pair.split(":")
    if importlib.util.find_spec(mod) is None:
        print(pair)
EOF
}

# The libraries whose major/minor version the model code depends on: the machine's own must match the pins
# (e.g. a GPU image of 2026-11 carried transformers 5.17; ivlm is built and tested on 4.57).
PINNED_MODULES="transformers:transformers tokenizers:tokenizers huggingface_hub:huggingface-hub"

mismatched_modules() {  # prints "module:package" for each of PINNED_MODULES installed at another major.minor
  local pair pin specs=""
  for pair in $PINNED_MODULES; do
    pin="$(pin_of "${pair#*:}")"
    [[ "$pin" == *"=="* ]] && specs+="$pair:${pin#*==} "
  done
  "$PY" - $specs <<'EOF' 2>/dev/null
import importlib, sys
for spec in sys.argv[1:]:
    mod, pkg, pinned = spec.split(":")
    try:
        version = importlib.import_module(mod).__version__
    except Exception:
        continue  # missing: missing_modules reports it
    if version.split(".")[:2] != pinned.split(".")[:2]:
        print(f"{mod}:{pkg}")
EOF
}

# ---------------------------------------------------------------------------------------------- steps
LOG_DIR="${OUT:-$ROOT/out}/gpu_check"
STEPS=(probe decode_profile cuda_tests bench_bf16 pipeline bench_int4 bench_int8)
DEFAULT_STEPS=",probe,cuda_tests,bench_bf16,pipeline,bench_int4,bench_int8,"
declare -A LIMIT=([probe]=60 [decode_profile]=200 [cuda_tests]=240 [bench_bf16]=190 [pipeline]=90 [bench_int4]=110 [bench_int8]=90)
declare -A NEEDS=(
  [probe]=""
  [decode_profile]="torch transformers numpy sentencepiece PIL"
  [cuda_tests]="torch transformers pytest numpy sentencepiece safetensors PIL numba trimesh yaml smplx"
  [bench_bf16]="torch transformers numpy sentencepiece PIL"
  [pipeline]="torch transformers numpy sentencepiece safetensors PIL numba trimesh yaml smplx scipy"
  [bench_int4]="torch transformers torchao numpy sentencepiece PIL"
  [bench_int8]="torch transformers torchao numpy sentencepiece PIL"
)
declare -A FILES=(
  [probe]="ivlm_core/__init__.py"
  [decode_profile]="ivlm_core/bench/decode_profile.py ivlm_core/model/fused_layers.py ivlm_core/model/decode_kernels.py ivlm_core/model/triton_decode_source.py"
  [cuda_tests]="test/test_model_decoding.py test/test_model_drafting.py test/test_model_decode_kernels.py test/test_geometry_point_lifting.py test/conftest.py test/ros_fixtures.py pyproject.toml ivlm_core/model/decoding.py ivlm_core/model/decode_kernels.py ivlm_core/model/triton_decode_source.py ivlm_core/geometry/point_lifting.py ivlm_core/testing/tiny_checkpoint.py ivlm_core/testing/synthetic_body.py"
  [bench_bf16]="ivlm_core/bench/model_latency.py ivlm_core/model/decoding.py ivlm_core/model/decode_kernels.py ivlm_core/model/triton_decode_source.py ivlm_core/model/drafting.py ivlm_core/model/quantization.py"
  [pipeline]="ivlm_core/bench/pipeline_samples.py ivlm_core/pipeline.py test/data/samples/tennis_racket__serve.png test/data/samples/bench__standing.png test/data/samples/surfboard__carrying.png"
  [bench_int4]="ivlm_core/bench/model_latency.py ivlm_core/model/quantization.py"
  [bench_int8]="ivlm_core/bench/model_latency.py ivlm_core/model/quantization.py"
)

step_cmd() {
  case "$1" in
    probe) echo "$PY -c 'probe: python, torch, CUDA device, transformers, torchao, missing modules'" ;;
    decode_profile) echo "$PY -m ivlm_core.bench.decode_profile --repeats 20" ;;
    cuda_tests) echo "$PY -m pytest -q -p no:cacheprovider -rs -m cuda test/test_model_decoding.py test/test_model_drafting.py test/test_model_decode_kernels.py test/test_geometry_point_lifting.py" ;;
    bench_bf16) echo "$PY -m ivlm_core.bench.model_latency --repeats 5 --naive-repeats 1 --draft" ;;
    pipeline) echo "$PY -m ivlm_core.bench.pipeline_samples --samples test/data/samples --device cuda --repeats 2" ;;
    bench_int4) echo "$PY -m ivlm_core.bench.model_latency --quant int4 --repeats 3 --naive-repeats 0" ;;
    bench_int8) echo "$PY -m ivlm_core.bench.model_latency --quant int8 --repeats 3 --naive-repeats 0" ;;
  esac
}

probe() {
  "$PY" - <<'EOF'
import importlib.util, platform, sys
print(f"python={platform.python_version()} executable={sys.executable}")
try:
    import torch
    print(f"torch={torch.__version__} cuda_build={torch.version.cuda} cuda_available={torch.cuda.is_available()}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"gpu={p.name} memory_gb={p.total_memory / 1e9:.1f} capability={p.major}.{p.minor} count={torch.cuda.device_count()}")
except Exception as err:
    print(f"torch import failed: {err}")
for mod in ("transformers", "triton", "torchao", "numba", "trimesh", "sentencepiece", "smplx", "scipy", "pytest"):
    if importlib.util.find_spec(mod) is None:
        print(f"{mod}=MISSING")
        continue
    try:
        m = __import__(mod)
        print(f"{mod}={getattr(m, '__version__', '?')}")
    except Exception as err:
        print(f"{mod}=BROKEN ({type(err).__name__}: {str(err)[:120]})")
EOF
}

importable_modules() {  # one interpreter start: "cuda" when torch sees a GPU, then every listed module that imports
  "$PY" - "$@" <<'EOF' 2>/dev/null
import sys
ok = []
for mod in sys.argv[1:]:
    try:
        __import__(mod)
        ok.append(mod)
    except Exception:
        pass
try:
    import torch
    if torch.cuda.is_available():
        ok.append("cuda")
except Exception:
    pass
print(" ".join(ok))
EOF
}

# ---------------------------------------------------------------------------------------------- dry run
if [ "$DRY_RUN" = 1 ]; then
  echo "gpu_check --dry-run: python $PY; global budget ${BUDGET_S}s; logs in $LOG_DIR"
  bad=0
  for s in "${STEPS[@]}"; do
    echo "  [$s] timeout ${LIMIT[$s]}s: $(step_cmd "$s")"
    for f in ${FILES[$s]}; do
      if [ ! -e "$f" ]; then echo "      MISSING in the tree: $f"; bad=1; fi
    done
    echo "      needs modules: ${NEEDS[$s]}"
  done
  total=0; for s in "${STEPS[@]}"; do
    [[ "${ONLY_STEPS:-$DEFAULT_STEPS}" == *",$s,"* ]] && total=$((total + LIMIT[$s]))
  done
  echo "  sum of step timeouts ${total}s; the run stops starting steps when the ${BUDGET_S}s budget is spent"
  miss="$(missing_modules | tr '\n' ' ')"
  if [ -n "$miss" ]; then
    echo "  on THIS machine these modules are missing (module:package): $miss"
  fi
  mismatch="$(mismatched_modules | tr '\n' ' ')"
  if [ -n "${mismatch// /}" ]; then
    echo "  on THIS machine these modules have other major/minor versions than ivlm pins (module:package): $mismatch"
    echo "  (give --wheels DIR to put the pinned ones first on PYTHONPATH)"
  fi
  if [ "$bad" = 0 ]; then echo "dry run OK: every file the steps need is in the tree"; exit 0; fi
  echo "dry run FAILED: files missing (see above)"; exit 1
fi

# ---------------------------------------------------------------------------------------------- offline install
miss="$(missing_modules | tr '\n' ' ')"
mismatch="$(mismatched_modules | tr '\n' ' ')"
if [ -n "${mismatch// /}" ] && [ -n "$WHEELS" ]; then  # the pinned versions shadow the machine's (PYTHONPATH first)
  miss="$miss $mismatch"
fi
if [ -n "${miss// /}" ] && [ -n "$WHEELS" ]; then
  SITE="${TMPDIR:-/tmp}/ivlm_gpu_check_site"  # a --target folder on PYTHONPATH: no venv/ensurepip needed,
  mkdir -p "$SITE"                          # the system torch stays the one imported
  echo "installing the missing packages offline from $WHEELS into $SITE"
  for pair in $miss; do  # one by one: a package without a wheel in DIR must not stop the others
    pin="$(pin_of "${pair#*:}")"
    "$PY" -m pip install -q --no-index --no-deps --target "$SITE" --find-links "$WHEELS" "$pin" >/dev/null 2>&1 \
      && echo "  installed $pin" || echo "  no wheel for $pin in $WHEELS (or no pip for $PY)"
  done
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  miss="$(missing_modules | tr '\n' ' ')"
  mismatch="$(mismatched_modules | tr '\n' ' ')"
fi

mkdir -p "$LOG_DIR"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-${TMPDIR:-/tmp}/ivlm_numba_cache}"
export TOKENIZERS_PARALLELISM=false
declare -A STATUS SECS KEY
start_all=$SECONDS
all_needed="$(for s in "${STEPS[@]}"; do echo "${NEEDS[$s]}"; done | tr ' ' '\n' | sort -u | tr '\n' ' ')"
# shellcheck disable=SC2086
AVAILABLE=" $(importable_modules $all_needed) "
for s in "${STEPS[@]}"; do
  left=$((BUDGET_S - (SECONDS - start_all)))
  if [[ "${ONLY_STEPS:-$DEFAULT_STEPS}" != *",$s,"* ]]; then
    STATUS[$s]="SKIPPED"; KEY[$s]="not in --steps"; SECS[$s]=0; continue
  fi
  if [ "$s" != probe ] && [[ "$AVAILABLE" != *" cuda "* ]]; then
    why="torch sees no CUDA device"; [[ "$AVAILABLE" == *" torch "* ]] || why="torch does not import with $PY"
    STATUS[$s]="SKIPPED"; KEY[$s]="$why"; SECS[$s]=0; continue
  fi
  need_missing=""
  for m in ${NEEDS[$s]}; do [[ "$AVAILABLE" == *" $m "* ]] || need_missing+="$m "; done
  if [ -n "$need_missing" ]; then
    pins=""; for m in $need_missing; do
      pkg="$m"; for pair in $MODULES; do [ "${pair%%:*}" = "$m" ] && pkg="${pair#*:}"; done
      pins+="$(pin_of "$pkg") "
    done
    STATUS[$s]="SKIPPED"; KEY[$s]="missing modules: ${need_missing}(pip: ${pins% }; offline: --wheels DIR)"; SECS[$s]=0
    continue
  fi
  if [ "$left" -lt 30 ]; then STATUS[$s]="SKIPPED"; KEY[$s]="out of the ${BUDGET_S}s budget"; SECS[$s]=0; continue; fi
  limit=${LIMIT[$s]}; [ "$left" -lt "$limit" ] && limit=$left
  echo "=== [$s] (timeout ${limit}s) $(step_cmd "$s")"
  t0=$SECONDS
  if [ "$s" = probe ]; then
    timeout -k 5 "$limit" bash -c "$(declare -f probe); PY='$PY' probe" > "$LOG_DIR/$s.log" 2>&1
  else
    # shellcheck disable=SC2046
    timeout -k 5 "$limit" $(step_cmd "$s") > "$LOG_DIR/$s.log" 2>&1
  fi
  rc=$?
  SECS[$s]=$((SECONDS - t0))
  grep -v "Failed to load .*\.so" "$LOG_DIR/$s.log" | tail -n 25
  case $rc in
    0) STATUS[$s]="OK" ;;
    124|137) STATUS[$s]="TIMEOUT" ;;
    *) STATUS[$s]="FAILED(rc=$rc)" ;;
  esac
  case "$s" in
    probe) KEY[$s]="$(grep -E '^(gpu|torch)=|torch import failed' "$LOG_DIR/$s.log" | tr '\n' ' ')" ;;
    cuda_tests) KEY[$s]="$(grep -E '(passed|failed|skipped|error)' "$LOG_DIR/$s.log" | tail -n1)" ;;
    bench_*) KEY[$s]="$(grep -E '^frame_s=' "$LOG_DIR/$s.log" | tail -n1) | $(grep -E '^decode weights=' "$LOG_DIR/$s.log" | tail -n1) | $(grep -E '^static == eager' "$LOG_DIR/$s.log" | tail -n1) $(grep -E 'agreement, not accuracy' "$LOG_DIR/$s.log" | tail -n1)$(grep -hE '^(forwards_per_answer=|drafted == plain|draft frames:)' "$LOG_DIR/$s.log" | sed 's/^/ | /' | tr -d '\n')" ;;
    pipeline) KEY[$s]="$(grep -E '^samples=' "$LOG_DIR/$s.log" | tail -n1)" ;;
    decode_profile) KEY[$s]="$(grep -E '^(copy_gbs|gemm_ms\[M=1\]|gemm_ms\[M=9\]|triton_gemv_ms|modules|fused)' "$LOG_DIR/$s.log" | tr '\n' ' ')" ;;
  esac
  [ "${STATUS[$s]}" = OK ] || KEY[$s]="${KEY[$s]} | last: $(grep -v '^\s*$' "$LOG_DIR/$s.log" | tail -n1 | cut -c1-200)"
done

{
  echo "================ ivlm gpu_check summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git describe --always --dirty 2>/dev/null || echo unknown), ${SECONDS}s)"
  [ -n "${miss// /}" ] && echo "missing modules (module:package): $miss"
  [ -n "${mismatch// /}" ] && echo "WARNING: other major/minor versions than ivlm pins (module:package): $mismatch; these figures are not of the tested stack: rerun with --wheels DIR (made with --fetch-wheels DIR --python-version X.Y $(for p in $mismatch; do printf '%s ' "${p#*:}"; done))"
  for s in "${STEPS[@]}"; do
    printf '%-11s %-14s %4ss  %s\n' "$s" "${STATUS[$s]}" "${SECS[$s]}" "${KEY[$s]}"
  done
  echo "targets (bench_bf16 on H200): decode_ms_per_token <= 1.3 x floor, frame_s <= 0.25, interaction_frame_s <= 0.45, peak_gb <= 32 (int4 <= 12); H100: 0.35 / 0.6"
  echo "draft targets (bench_bf16 --draft): forwards_per_answer <= 8 (30-token answers), drafted frame_s <= 0.12 on H200, rejected_draft_overhead <= 0.10"
} | tee "$LOG_DIR/summary.txt"
for s in "${STEPS[@]}"; do
  case "${STATUS[$s]}" in OK|SKIPPED) ;; *) exit 1 ;; esac
done
exit 0
