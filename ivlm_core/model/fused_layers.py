"""The LLaMA decoder layer as few, large GPU kernels: fused projection weights and compiled glue.

A decode step of the 13B LLM is bound by reading its weights (~26 GB), but written as the HF modules run
it, each of its 40 layers also launches ~45 small kernels (RMSNorm alone is 6, rotary 10, separate q/k/v
and gate/up matrix-vector products). On an H200 those add several milliseconds per token on top of the
weight reads. Two changes remove most of that, without touching the released weights or the numerics:

- `FusedLayer` concatenates q/k/v and gate/up into one weight each and points the HF modules' weights at
  views of it, so there is no second copy in memory and the model stays loadable and savable as before;
- `LayerKernels` runs the glue around the attention (norm + one q/k/v product + rotary before it; output
  projection, residual, norm, one gate/up product, SiLU and the down projection after it) as plain
  functions, optionally through `torch.compile` (inductor fuses the element-wise work into a few kernels;
  the matrix products stay cuBLAS). The cache write and the attention itself stay outside the compiled
  region: in-place cache writes are what a CUDA graph replays most reliably.

With `gemv` on, a forward of at most `decode_kernels.MAX_ROWS` rows (plain decoding: one token per row) runs
each layer as four Triton kernels around the attention: norm + q/k/v product + rotary + cache write; output
product + residual; norm + gate/up product + SiLU·up; down product + residual (instead of ~19 kernels).

Layers whose weights are not plain tensors (torchao-quantised) or that have biases are left to the modules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from ivlm_core.model import decode_kernels
from ivlm_core.model.decode_kernels import GemvCase, GemvTuner, gemv, qkv_rope
from ivlm_core.pipeline_config import DECODER_COMPILE as COMPILE_MODES
from ivlm_core.pipeline_config import DECODER_GEMV as GEMV_MODES

LOG = logging.getLogger(__name__)


def _plain(weight: torch.Tensor) -> bool:
    """A dense strided tensor that concatenating and viewing keeps bit-identical (not a quantised subclass)."""
    return type(weight) in (torch.Tensor, nn.Parameter) and weight.layout == torch.strided and not weight.is_meta


def _fuse(linears: list[nn.Linear]) -> torch.Tensor:
    """One (sum of outputs, in) weight for several bias-free Linear layers of the same input, their weights
    plain tensors; each layer's weight becomes a view of it (the old tensors are freed). Weights that already
    are consecutive rows of one tensor (fused by an earlier decoder) are taken as they lie, not copied again."""
    weights = [m.weight for m in linears]
    first, rows = weights[0], sum(w.shape[0] for w in weights)
    row_bytes = first.shape[1] * first.element_size()
    starts = [sum(w.shape[0] for w in weights[:i]) for i in range(len(weights))]
    if all(w.is_contiguous() and w.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
           and w.data_ptr() == first.data_ptr() + start * row_bytes for w, start in zip(weights, starts)):
        return first.detach().as_strided((rows, first.shape[1]), (first.shape[1], 1))
    fused = torch.cat([w.detach() for w in weights], dim=0)
    for m, start in zip(linears, starts):
        m.weight = nn.Parameter(fused[start : start + m.weight.shape[0]], requires_grad=False)
    return fused


@dataclass
class FusedLayer:
    """One decoder layer's weights in the shapes the fused kernels take."""

    input_norm: torch.Tensor
    qkv: torch.Tensor  # (q_out + 2 * kv_out, hidden)
    out: torch.Tensor
    post_norm: torch.Tensor
    gate_up: torch.Tensor  # (2 * intermediate, hidden)
    down: torch.Tensor
    eps: float

    @classmethod
    def from_module(cls, layer: nn.Module) -> FusedLayer | None:
        """Fuse an HF LlamaDecoderLayer in place; None (module left as it was) when it cannot be."""
        attn, mlp = layer.self_attn, layer.mlp
        norms = (layer.input_layernorm, layer.post_attention_layernorm)
        linears = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        if (
            getattr(getattr(mlp, "config", None), "hidden_act", None) not in ("silu", "swish")
            or any(m.bias is not None or not _plain(m.weight) for m in linears)
            or not all(_plain(n.weight) for n in norms)
            or norms[0].variance_epsilon != norms[1].variance_epsilon
        ):
            return None
        return cls(norms[0].weight, _fuse([attn.q_proj, attn.k_proj, attn.v_proj]), attn.o_proj.weight,
                   norms[1].weight, _fuse([mlp.gate_proj, mlp.up_proj]), mlp.down_proj.weight,
                   float(norms[0].variance_epsilon))

    def gemv_cases(self, rows: int) -> list[GemvCase]:
        """The four matrix-vector products of this layer for `rows` rows, as `decode_kernels` runs them."""
        hidden = self.qkv.shape[1]
        return [GemvCase(self.qkv.shape[0], hidden, rows, norm=True),
                GemvCase(self.out.shape[0], self.out.shape[1], rows, residual=True),
                GemvCase(self.gate_up.shape[0] // 2, hidden, rows, norm=True, gated=True),
                GemvCase(self.down.shape[0], self.down.shape[1], rows, residual=True)]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm exactly: the statistics in float32, the scale applied in the input dtype."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def attention_inputs(x: torch.Tensor, w_norm: torch.Tensor, w_qkv: torch.Tensor, cos: torch.Tensor,
                     sin: torch.Tensor, eps: float, heads: int, kv_heads: int,
                     head_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,K,H) residual stream -> rotated q (B,heads,K,D), rotated k and v (B,kv_heads,K,D)."""
    batch, k_len, _ = x.shape
    qkv = F.linear(rms_norm(x, w_norm, eps), w_qkv)
    q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    q = q.reshape(batch, k_len, heads, head_dim).transpose(1, 2)
    k = k.reshape(batch, k_len, kv_heads, head_dim).transpose(1, 2)
    v = v.reshape(batch, k_len, kv_heads, head_dim).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return q, k, v


def attention_output_and_mlp(x: torch.Tensor, attended: torch.Tensor, w_out: torch.Tensor, w_norm: torch.Tensor,
                             w_gate_up: torch.Tensor, w_down: torch.Tensor, eps: float) -> torch.Tensor:
    """Residual stream after the layer, from the attention's (B,heads,K,D) output."""
    batch, _, k_len, _ = attended.shape
    x = x + F.linear(attended.transpose(1, 2).reshape(batch, k_len, -1), w_out)
    gate, up = F.linear(rms_norm(x, w_norm, eps), w_gate_up).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, w_down)


def attention_output_and_mlp_gemv(x: torch.Tensor, attended: torch.Tensor, layer: FusedLayer, tuner: GemvTuner,
                                  pdl: bool = False) -> torch.Tensor:
    """`attention_output_and_mlp` as three Triton products (residual, norm + SiLU·up and residual folded in)."""
    batch, _, k_len, _ = attended.shape
    rows = batch * k_len
    _, out_case, gate_up_case, down_case = layer.gemv_cases(rows)
    x = gemv(attended.transpose(1, 2).reshape(rows, -1), layer.out, residual=x, config=tuner.config(out_case),
             pdl=pdl)
    h = gemv(x, layer.gate_up, norm_weight=layer.post_norm, eps=layer.eps, gated=True,
             config=tuner.config(gate_up_case), pdl=pdl)
    return gemv(h, layer.down, residual=x, config=tuner.config(down_case), pdl=pdl).reshape(batch, k_len, -1)


class LayerKernels:
    """The glue around each attention, eager or compiled once for every layer (the weights are arguments, so
    one compiled graph serves all 40 layers; batch and token count are dynamic), and with `gemv` the Triton
    products for forwards of at most `decode_kernels.MAX_ROWS` rows."""

    def __init__(self, compiled: bool, backend: str = "inductor", gemv: bool = False) -> None:
        self.compiled = compiled
        self.failure: str | None = None
        self.gemv = gemv
        """Whether forwards of few rows run the Triton products (`StaticDecoder` may turn it off: 'auto')."""
        self.gemv_failure: str | None = None
        self.pdl = False
        """Whether the Triton kernels launch as programmatic dependents (Hopper; chosen at the warm-up)."""
        self.tuner = GemvTuner()
        self._pre, self._post = attention_inputs, attention_output_and_mlp
        if compiled:
            self._pre, self._post = (
                self._guarded(torch.compile(fn, dynamic=True, fullgraph=True, backend=backend), fn)
                for fn in (attention_inputs, attention_output_and_mlp)
            )

    def _guarded(self, compiled, eager):
        """The compiled function, falling back for good to the eager one if compiling it fails (a missing
        compiler, an inductor bug on this GPU): slower decoding, never a dead node. Compilation happens in the
        warm-up that precedes every graph capture, so a fallback never lands inside a capture."""

        def run(*args):
            if self.failure is None:
                try:
                    return compiled(*args)
                except Exception as err:  # torch._dynamo / inductor raise many types
                    self.failure = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
                    self.compiled = False
                    LOG.warning("compiling the decoder's layer glue failed (%s); it runs eagerly", self.failure)
            return eager(*args)

        return run

    def _few_rows(self, x: torch.Tensor) -> bool:
        return self.gemv and x.shape[0] * x.shape[1] <= decode_kernels.MAX_ROWS

    def _gemv_failed(self, err: Exception) -> None:
        """A Triton product that does not build or launch here turns them off for good (cuBLAS takes over);
        like compilation this happens in the warm-up before any capture."""
        self.gemv_failure = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
        self.gemv = False
        LOG.warning("the Triton decode products failed (%s); decoding uses cuBLAS", self.gemv_failure)

    def attention_inputs_to_cache(self, x: torch.Tensor, layer: FusedLayer, cos: torch.Tensor, sin: torch.Tensor,
                                  keys: torch.Tensor, values: torch.Tensor, cols: torch.Tensor, heads: int,
                                  kv_heads: int, head_dim: int) -> torch.Tensor:
        """`attention_inputs` (norm, q/k/v product, rotary), with k and v written into the cache views
        `keys`/`values` at columns `cols`; returns q. With the Triton kernels this is one kernel."""
        if self._few_rows(x) and decode_kernels.rope_fits(head_dim):
            try:
                qkv_case = layer.gemv_cases(x.shape[0] * x.shape[1])[0]
                return qkv_rope(x, layer.qkv, layer.input_norm, layer.eps, cos, sin, cols, keys, values, heads,
                                kv_heads, config=self.tuner.config(qkv_case), pdl=self.pdl)
            except Exception as err:  # triton compile/launch errors have many types
                self._gemv_failed(err)
        q, k, v = self._pre(x, layer.input_norm, layer.qkv, cos, sin, layer.eps, heads, kv_heads, head_dim)
        keys.index_copy_(2, cols, k)
        values.index_copy_(2, cols, v)
        return q

    def post(self, x: torch.Tensor, attended: torch.Tensor, layer: FusedLayer) -> torch.Tensor:
        """`attention_output_and_mlp`: output projection, residual, norm, MLP, residual."""
        if self._few_rows(x):
            try:
                return attention_output_and_mlp_gemv(x, attended, layer, self.tuner, self.pdl)
            except Exception as err:
                self._gemv_failed(err)
        return self._post(x, attended, layer.out, layer.post_norm, layer.gate_up, layer.down, layer.eps)


def resolve_compile(mode: str, device: torch.device) -> bool:
    """'auto' compiles on CUDA when inductor's GPU backend (Triton) imports; 'on' everywhere; 'off' never."""
    if mode not in COMPILE_MODES:
        from ivlm_core.errors import InvalidInputError

        raise InvalidInputError(f"decoder compile mode must be one of {list(COMPILE_MODES)}, got {mode!r}")
    if mode == "off":
        return False
    if mode == "on":
        return True
    if device.type != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # no Triton: inductor cannot build GPU kernels; the eager glue still runs fused weights
        LOG.info("triton is not importable: the decoder's layer glue runs eagerly")
        return False
    return True


def resolve_gemv(mode: str, device: torch.device) -> bool:
    """Whether the Triton decode kernels may run: 'auto' on CUDA when Triton builds them (the decoder's warm-up
    then uses them only if its captured step agrees with cuBLAS's and is faster), 'on' wherever they can run
    (CUDA, or the Triton interpreter; on CUDA still only if they agree), 'off' never."""
    if mode not in GEMV_MODES:
        from ivlm_core.errors import InvalidInputError

        raise InvalidInputError(f"decoder gemv mode must be one of {list(GEMV_MODES)}, got {mode!r}")
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return False
    if decode_kernels.available(device):
        return True
    if mode == "on":
        from ivlm_core.errors import InvalidInputError

        raise InvalidInputError(
            f"decoder_gemv 'on' needs Triton and a CUDA device (or TRITON_INTERPRET=1 for tests); the decoder is on "
            f"{device.type}: use 'auto' or 'off'"
        )
    return False
