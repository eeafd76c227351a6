"""Triton kernels for the decode step: matrix-vector products with the layer's glue folded in.

A 13B decode step reads ~26 GB of weights through 160 matrix products of one or two rows. On an H200 cuBLAS
runs them at 87 % of the card's copy rate, and the small kernels between them (RMSNorm, rotary, cache writes,
SiLU·up, residual adds, their launches) add ~1.5 ms a token on top (`bench.decode_profile`). These kernels do
each product in one pass over the weight rows, with what surrounds it done on the few input/output values in
registers:

- `gemv` with `NORM`: the input row is RMS-normalised first (every program recomputes the row's statistics:
  the row is a few KB, read from L2), exactly as `LlamaRMSNorm` rounds it; with `GATED` the weight is gate
  and up stacked (2I, H), each program reads matching gate and up rows and writes SiLU(gate) · up, so the
  (1, 2I) intermediate never exists; with `RESIDUAL` the residual stream is added to the output;
- `qkv_rope`: norm + the fused q/k/v product + rotary, each program holding the two halves of one head's
  columns that the rotation mixes; q is returned, k and v are written straight into the static KV cache.

Each program owns a few output columns for every row and walks the whole reduction, so there is no split-K
pass to merge. Rounding follows the eager bf16 modules step by step (products rounded to the dtype before
SiLU, rotary, the multiply and the residual add), so results match them to a rounding, not bit for bit.

The Triton source is `triton_decode_source`, imported on first use only: this module imports without Triton,
and `available()` says whether the kernels can run (CUDA, or `TRITON_INTERPRET=1` on CPU, which the tests
use). `GemvTuner` picks each product's launch shape by timing a few candidates on the GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

import torch

LOG = logging.getLogger(__name__)

MAX_ROWS = 4
"""Most rows (batch × tokens) one call takes: plain decoding is 1 or 2; wider forwards stay with cuBLAS."""


@dataclass(frozen=True)
class GemvConfig:
    """Launch shape of one kernel: output columns per program, reduction chunk, warps, pipeline stages."""

    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


DEFAULT_CONFIG = GemvConfig(8, 512, 4, 3)
CANDIDATES = (
    DEFAULT_CONFIG,
    GemvConfig(4, 1024, 4, 3),
    GemvConfig(16, 256, 4, 3),
    GemvConfig(16, 512, 8, 3),
    GemvConfig(32, 256, 8, 2),
    GemvConfig(8, 256, 4, 4),
)
"""What `tune` tries. Chosen for memory-bound rows: 8-16 KB of weights in flight per program and stage."""


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available(device: torch.device) -> bool:
    """Whether the kernels can run on `device`: Triton importable and a CUDA device (or the interpreter)."""
    if device.type != "cuda" and not interpreted():
        return False
    try:
        _kernels()
    except Exception as err:  # no Triton, or one that fails to import
        LOG.info("Triton decode kernels unavailable: %s", err)
        return False
    return True


@functools.lru_cache(maxsize=1)
def _kernels():
    """The Triton source module, imported on first use (Triton decides at decoration time whether to
    interpret, so `TRITON_INTERPRET` must be set before this)."""
    from ivlm_core.model import triton_decode_source

    return triton_decode_source


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(..., K) as (M, K) with unit stride along K (a view when it can be)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def gemv(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    norm_weight: torch.Tensor | None = None,
    eps: float = 0.0,
    gated: bool = False,
    residual: torch.Tensor | None = None,
    config: GemvConfig | None = None,
    pdl: bool = False,
) -> torch.Tensor:
    """`x` (..., K) times `weight` (N, K) transposed -> (..., N); (..., N/2) when `gated` (gate rows stacked
    on up rows). At most `MAX_ROWS` rows. `norm_weight` RMS-normalises `x` first; `residual` (..., N) is added.
    `pdl`: launch as a programmatic dependent of the previous kernel (Hopper and later; see the source)."""
    rows = _rows(x)
    m, k = rows.shape
    if not 1 <= m <= MAX_ROWS:
        raise ValueError(f"gemv takes 1..{MAX_ROWS} rows, got {m}")
    if weight.shape[1] != k or weight.stride(1) != 1:
        raise ValueError(f"weight {tuple(weight.shape)} (stride {weight.stride()}) does not take rows of {k}")
    n = weight.shape[0] // 2 if gated else weight.shape[0]
    out = torch.empty((m, n), device=x.device, dtype=x.dtype)
    res = _rows(residual) if residual is not None else out
    if res.shape != out.shape:
        raise ValueError(f"residual {tuple(res.shape)} does not match the output {tuple(out.shape)}")
    cfg = config or DEFAULT_CONFIG
    block_m, block_n, block_k = launch_blocks(cfg, m)
    _kernels().gemv_kernel[(_cdiv(n, block_n),)](
        rows, weight, out, res, norm_weight if norm_weight is not None else weight, m, n, k, float(eps),
        rows.stride(0), weight.stride(0), out.stride(0), res.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, NORM=norm_weight is not None, GATED=gated,
        RESIDUAL=residual is not None, PDL=pdl, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        launch_pdl=pdl,
    )
    return out.reshape(*x.shape[:-1], n)


def pdl_supported(device: torch.device) -> bool:
    """Programmatic dependent launch needs a Hopper or later GPU (and the real compiler, not the interpreter)."""
    return device.type == "cuda" and not interpreted() and torch.cuda.get_device_capability(device)[0] >= 9


def rope_fits(head_dim: int) -> bool:
    """Whether `qkv_rope` takes this head size: its halves a power of two (every LLaMA has 64 or 128)."""
    half = head_dim // 2
    return head_dim % 2 == 0 and half >= 1 and half & (half - 1) == 0


def qkv_rope(
    x: torch.Tensor,
    weight: torch.Tensor,
    norm_weight: torch.Tensor,
    eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cols: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    heads: int,
    kv_heads: int,
    config: GemvConfig | None = None,
    pdl: bool = False,
) -> torch.Tensor:
    """The attention inputs of (B,K,H) rows in one kernel: RMSNorm, the fused q/k/v product, rotary; k and v
    are written into the cache (`keys`/`values` (B, kv_heads, T, D), at columns `cols` (K,)) and the rotated q
    (B, heads, K, D) is returned. `cos`/`sin` (B,K,D) are the rows' rotary tables. At most `MAX_ROWS` rows."""
    batch, tokens, hidden = x.shape
    head_dim = keys.shape[-1]
    rows = _rows(x)
    if not 1 <= rows.shape[0] <= MAX_ROWS or not rope_fits(head_dim):
        raise ValueError(f"qkv_rope takes 1..{MAX_ROWS} rows and power-of-two half heads, got {rows.shape[0]} rows "
                         f"of head size {head_dim}")
    if weight.shape != ((heads + 2 * kv_heads) * head_dim, hidden) or weight.stride(1) != 1:
        raise ValueError(f"q/k/v weight {tuple(weight.shape)} does not match {heads}+2x{kv_heads} heads of "
                         f"{head_dim} over {hidden}")
    for cache in (keys, values):
        if cache.shape[:2] != (batch, kv_heads) or cache.stride(-1) != 1:
            raise ValueError(f"cache view {tuple(cache.shape)} does not hold {batch} rows of {kv_heads} heads")
    trig_cos, trig_sin = _rows(cos), _rows(sin)
    if trig_cos.stride() != trig_sin.stride():
        trig_cos, trig_sin = trig_cos.contiguous(), trig_sin.contiguous()
    q = torch.empty((batch, heads, tokens, head_dim), device=x.device, dtype=x.dtype)
    cfg = config or DEFAULT_CONFIG
    block_m, block_n, block_k = launch_blocks(cfg, rows.shape[0])
    half = head_dim // 2
    block_n = min(block_n, half)
    _kernels().qkv_rope_kernel[((heads + 2 * kv_heads) * (half // block_n),)](
        rows, weight, norm_weight, trig_cos, trig_sin, cols, q, keys, values, rows.shape[0], hidden, float(eps),
        tokens, heads, kv_heads, rows.stride(0), weight.stride(0), trig_cos.stride(0),
        q.stride(0), q.stride(1), q.stride(2), keys.stride(0), keys.stride(1), keys.stride(2),
        values.stride(0), values.stride(1), values.stride(2),
        HALF=half, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, PDL=pdl, num_warps=cfg.num_warps,
        num_stages=cfg.num_stages, launch_pdl=pdl,
    )
    return q


def launch_blocks(config: GemvConfig, rows: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K) for `rows` rows: the accumulators hold rows × block_n × block_k floats, so
    the reduction chunk shrinks as rows grow (4 rows of a gated 8 × 512 tile would spill registers)."""
    block_m = 1 if rows == 1 else 2 if rows == 2 else 4
    return block_m, config.block_n, max(32, config.block_k // max(1, block_m // 2))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class GemvCase:
    """One product a decode step runs: its weight shape, its row count and what is folded into it."""

    n: int
    k: int
    rows: int
    norm: bool = False
    gated: bool = False
    residual: bool = False


class GemvTuner:
    """Each case's best `GemvConfig`, measured on the device (CUDA events over back-to-back launches)."""

    def __init__(self) -> None:
        self.configs: dict[GemvCase, GemvConfig] = {}
        self.timings: dict[GemvCase, dict[GemvConfig, float]] = {}

    def config(self, case: GemvCase) -> GemvConfig:
        """The case's tuned launch; else the one tuned for one row of the same product (the weight stream is
        the same, `launch_blocks` adapts it to more rows); else the default."""
        found = self.configs.get(case)
        if found is None and case.rows != 1:
            found = self.configs.get(dataclasses.replace(case, rows=1))
        return found or DEFAULT_CONFIG

    def tune(self, cases: Iterable[GemvCase], device: torch.device, dtype: torch.dtype, repeats: int = 20) -> None:
        """Time every candidate on random data of each case's shape; keep the fastest that runs. On CPU
        (interpreter) the default is kept: timing interpreted kernels means nothing."""
        for case in cases:
            if case in self.configs:
                continue
            if device.type != "cuda":
                self.configs[case] = DEFAULT_CONFIG
                continue
            timed = _time_candidates(case, device, dtype, repeats)
            if not timed:
                raise RuntimeError(f"no gemv launch configuration runs for {case}")
            self.configs[case] = min(timed, key=timed.get)
            self.timings[case] = timed
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the timing weights (~300 MB a case) go back to the device


def _time_candidates(case: GemvCase, device: torch.device, dtype: torch.dtype, repeats: int) -> dict:
    """Milliseconds per call of every candidate that runs, on random data of the case's shape; enough weight
    copies are cycled that back-to-back launches cannot be served from L2 (50-60 MB on Hopper)."""
    shape = (2 * case.n if case.gated else case.n, case.k)
    copies = max(1, -(-(256 << 20) // (shape[0] * shape[1] * dtype.itemsize)))
    weights = [torch.randn(shape, device=device, dtype=dtype) for _ in range(copies)]
    x = torch.randn((case.rows, case.k), device=device, dtype=dtype)
    kwargs = {
        "norm_weight": torch.ones(case.k, device=device, dtype=dtype) if case.norm else None,
        "eps": 1e-6, "gated": case.gated,
        "residual": torch.zeros((case.rows, case.n), device=device, dtype=dtype) if case.residual else None,
    }
    timed: dict[GemvConfig, float] = {}
    for cfg in CANDIDATES:
        try:
            timed[cfg] = _median_ms([lambda cfg=cfg, w=w: gemv(x, w, config=cfg, **kwargs) for w in weights], repeats)
        except Exception as err:  # a launch shape this GPU cannot run (registers, shared memory)
            LOG.debug("gemv config %s failed for %s: %s", cfg, case, err)
    return timed


def _median_ms(calls: list, repeats: int) -> float:
    """Median milliseconds of one call, each sample a pass over `calls` (launched back to back)."""
    for fn in calls:  # compile + warm
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for fn in calls:
            fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end) / len(calls))
    return statistics.median(out)
