"""Greedy decoding of the LLaVA LLM at the weight-bandwidth floor: static KV cache, device-side stops,
and the single-token step captured once in a CUDA graph.

One decode step of a 13B model reads every weight once (~26 GB in bf16); anything else per token - Python,
kernel launches, a host sync to test for EOS - is overhead on top of that floor. So:

- the KV cache is allocated once (`StaticKVCache`), sized for the longest prompt + answer, for up to
  `max_batch` rows; prompts of different lengths sit right-padded in the same columns and a per-row
  validity mask hides the padding, while each row keeps its own rotary positions (so a row of a batch
  decodes exactly like the same prompt alone);
- the stop conditions (EOS, first mask token, length) are evaluated on the device; the host reads each
  step's "all rows done" flag back one step behind, on CUDA asynchronously (`_DoneReadback`), so the GPU never
  waits for the host and exactly one step runs past a stop;
- decoding stops at a row's first mask token ([SEG]/[HSEG]/[OSEG]) when asked: the state that emitted it is
  what the mask decoder needs, and the body parts come before it in the answer;
- on CUDA the whole single-token step (LM head, argmax, stop bookkeeping, embedding, 40-layer forward) is
  captured in a `torch.cuda.CUDAGraph` per batch size at warm-up and replayed per token. On CPU the same
  step runs eagerly (that is what the CPU tests compare with the eager `DynamicCache` and naive paths);
- each layer runs as few kernels as it can (`fused_layers`): q/k/v and gate/up as one product each, and the
  glue around the attention compiled by torch.compile on CUDA (`compile_mode`), inside the captured graph;
  with `gemv_mode` the products of a step of up to 4 rows are Triton kernels with the norms, rotary, cache
  writes, SiLU·up and residual adds folded in (`decode_kernels`), used only when the warm-up finds their
  captured step agrees with cuBLAS's and, under 'auto', is faster.

`step(tokens[B, K])` and `truncate(n)` are the verify-and-roll-back primitives; `generate_drafted` is the
lossless draft-and-verify loop built on them (issue 13): each forward feeds the last accepted token plus up
to K draft tokens (from `drafting.TemplateDrafter`), accepts the longest prefix the model's own argmax
agrees with plus the model's next token, and drops the rejected columns. On CUDA the verify forward is one
captured graph per (batch, K bucket).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from ivlm_core.errors import InvalidInputError
from ivlm_core.model import decode_kernels
from ivlm_core.model.drafting import DraftLength
from ivlm_core.model.fused_layers import FusedLayer, LayerKernels, resolve_compile, resolve_gemv

LOG = logging.getLogger(__name__)

GEMV_AGREEMENT = 0.99
"""Least cosine between a captured step's state with the Triton products and with cuBLAS for them to be used
(bf16 rounding gives ~0.9999; a wrong kernel far less)."""


@dataclass
class DecodeResult:
    """Per row: generated ids up to and including the stop token, why it stopped, its mask-token state."""

    generated: list[list[int]]
    stop_reason: list[str]  # "mask" | "eos" | "length"
    seg_index: list[int | None]
    seg_token: list[int | None]
    seg_hidden: list[torch.Tensor | None]  # (1, H) final-norm state whose LM-head output was the mask token
    prefill_s: float
    decode_s: float
    forwards: int = 0  # decode forwards after the prefill
    accepted: int = 0  # draft tokens accepted (draft-and-verify only)


Drafter = Callable[[int, Sequence[int], int], list[int]]
"""(row, answer so far incl. its last token, k) -> up to k draft tokens."""


def verify_buckets(max_draft: int) -> list[int]:
    """The draft widths that get a captured verify graph: 0 (plain step with a host read), the powers of two
    below `max_draft`, and `max_draft` itself (a draft is padded up to the next one)."""
    k = int(max_draft)
    return sorted({0, k, *(2**i for i in range(1, k.bit_length()) if 2**i < k)})


class _VerifyBuffers:
    """Static inputs/outputs of one verify forward of K+1 tokens per row (one set per (batch, K))."""

    def __init__(self, batch: int, width: int, hidden: int, device: torch.device, dtype: torch.dtype) -> None:
        self.tokens = torch.zeros((batch, width), device=device, dtype=torch.long)
        self.col0 = torch.zeros((1,), device=device, dtype=torch.long)
        self.hidden = torch.zeros((batch, width, hidden), device=device, dtype=dtype)
        self.argmax = torch.zeros((batch, width), device=device, dtype=torch.long)
        self.offsets = torch.arange(width, device=device)


class StaticKVCache:
    """Keys/values (layers, B, kv_heads, max_len, head_dim) allocated once, a (B, max_len) validity mask
    and the number of columns in use. `truncate(n)` rolls the cache back to its first n columns."""

    def __init__(
        self,
        num_layers: int,
        max_batch: int,
        kv_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        shape = (num_layers, max_batch, kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.valid = torch.zeros((max_batch, max_len), device=device, dtype=torch.bool)
        self.columns = torch.arange(max_len, device=device)
        self.max_len = max_len
        self.max_batch = max_batch
        self.length = 0

    @property
    def nbytes(self) -> int:
        return self.keys.nelement() * self.keys.element_size() * 2

    def reset(self) -> None:
        self.valid.zero_()
        self.length = 0

    def truncate(self, n: int) -> None:
        """Forget every column from `n` on (rejected draft tokens); their stale values are masked out."""
        if not 0 <= n <= self.length:
            raise InvalidInputError(f"cannot truncate a cache of {self.length} columns to {n}")
        self.valid[:, n:] = False
        self.length = n


class _LoopState:
    """The static buffers one captured decode step reads and writes (one set per batch size)."""

    def __init__(self, batch: int, hidden: int, max_new: int, seg_ids: Sequence[int], eos: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.hidden = torch.zeros((batch, hidden), device=device, dtype=dtype)
        self.step = torch.zeros((1,), device=device, dtype=torch.long)
        self.col0 = torch.zeros((1,), device=device, dtype=torch.long)
        self.pos0 = torch.zeros((batch,), device=device, dtype=torch.long)
        self.tokens = torch.zeros((batch, max_new), device=device, dtype=torch.long)
        self.done = torch.zeros((batch,), device=device, dtype=torch.bool)
        self.stop_len = torch.zeros((batch,), device=device, dtype=torch.long)
        self.seg_index = torch.full((batch,), -1, device=device, dtype=torch.long)
        self.seg_token = torch.full((batch,), -1, device=device, dtype=torch.long)
        self.seg_hidden = torch.zeros((batch, hidden), device=device, dtype=dtype)
        self.seg_ids = torch.tensor(list(seg_ids), device=device, dtype=torch.long)
        self.eos = torch.full((1,), int(eos), device=device, dtype=torch.long)
        self.stop_at_mask = torch.zeros((1,), device=device, dtype=torch.bool)
        self.limit = torch.zeros((1,), device=device, dtype=torch.long)
        self.max_new = max_new

    def start(self, hidden: torch.Tensor, prompt_lens: torch.Tensor, col0: int, stop_at_mask: bool,
              max_new_tokens: int) -> None:
        self.hidden.copy_(hidden)
        self.step.zero_()
        self.col0.fill_(col0)
        self.pos0.copy_(prompt_lens)
        self.tokens.zero_()
        self.done.zero_()
        self.stop_len.fill_(max_new_tokens)
        self.seg_index.fill_(-1)
        self.seg_token.fill_(-1)
        self.seg_hidden.zero_()
        self.stop_at_mask.fill_(stop_at_mask)
        self.limit.fill_(max_new_tokens)


class _DoneReadback:
    """Each step's "every row done" flag, read back without making the device wait for the host: on CUDA
    copied into pinned memory behind the step and fenced by an event (the host then looks one step behind
    while the next step runs); elsewhere read at once."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._slots = torch.zeros(4, dtype=torch.bool, pin_memory=self.cuda)  # at most 2 in flight
        self._next = 0

    def post(self, done: torch.Tensor):
        if not self.cuda:
            return bool(done.all())
        slot = self._next
        self._next = (slot + 1) % len(self._slots)
        self._slots[slot].copy_(done.all(), non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return event, slot

    def value(self, handle) -> bool:
        if not self.cuda:
            return handle
        event, slot = handle
        event.synchronize()
        return bool(self._slots[slot])


class StaticDecoder:
    """Static-cache greedy decoder over a `LlamaForCausalLM`'s own modules (weights shared, not copied).

    The forward is written out layer by layer (norm, q/k/v, rotary, cache write, masked SDPA, o_proj, MLP):
    through `fused_layers` where a layer's weights are plain tensors (fused projections, optionally compiled
    glue), else on the HF modules, so quantised Linear layers (torchao) work unchanged; nothing in it depends on
    a transformers cache class. `capture()` records the single-token step as CUDA graphs.
    """

    def __init__(
        self,
        llm,
        seg_token_ids: Sequence[int],
        eos_token_id: int,
        max_len: int,
        max_new_tokens: int,
        max_batch: int = 2,
        compile_mode: str = "auto",
        fuse: bool = True,
        gemv_mode: str = "auto",
    ) -> None:
        cfg = llm.config
        self.llm = llm
        self.model = llm.model
        self.layers = list(llm.model.layers)
        self.num_heads = int(cfg.num_attention_heads)
        self.kv_heads = int(getattr(cfg, "num_key_value_heads", None) or self.num_heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // self.num_heads)
        self.hidden_size = int(cfg.hidden_size)
        self.max_new_tokens = int(max_new_tokens)
        weight = llm.lm_head.weight
        self.device = weight.device
        self.dtype = llm.model.embed_tokens.weight.dtype
        self._readback = _DoneReadback(self.device)
        if max_len <= max_new_tokens:
            raise InvalidInputError(f"cache length {max_len} leaves no room for a prompt of {max_new_tokens} tokens")
        self.cache = StaticKVCache(
            len(self.layers), max_batch, self.kv_heads, max_len, self.head_dim, self.device, self.dtype
        )
        positions = torch.arange(max_len, device=self.device)[None]
        probe = torch.zeros((1, 1), device=self.device, dtype=self.dtype)
        cos, sin = llm.model.rotary_emb(probe, positions)
        self._cos, self._sin = cos[0], sin[0]  # (max_len, head_dim), exactly the HF values per position
        self._row_pos = torch.zeros((max_batch,), device=self.device, dtype=torch.long)
        self.seg_token_ids = tuple(sorted({int(t) for t in seg_token_ids}))
        self.eos_token_id = int(eos_token_id)
        self._states: dict[int, _LoopState] = {}
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._verify: dict[tuple[int, int], _VerifyBuffers] = {}
        self._verify_graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self._verify_pool = None
        # fused q/k/v and gate/up weights (views: no second copy) + the glue, compiled on CUDA (fused_layers)
        self._fused = [FusedLayer.from_module(layer) if fuse else None for layer in self.layers]
        self.compile_mode = compile_mode
        self.gemv_mode = gemv_mode
        self.gemv_choice: dict | None = None
        """After a CUDA warm-up: `step_ms` per variant (triton+pdl, triton, cublas), their `agreement` with
        cuBLAS's step and the variant `using`."""
        self._gemv_possible = resolve_gemv(gemv_mode, self.device) and any(f is not None for f in self._fused)
        # 'auto' turns them on only in capture(), once they are tuned, checked against cuBLAS and faster
        self.kernels = LayerKernels(resolve_compile(compile_mode, self.device),
                                    gemv=self._gemv_possible and gemv_mode == "on")

    # ----------------------------------------------------------------------------------------- forward
    @property
    def max_prompt_len(self) -> int:
        return self.cache.max_len - self.max_new_tokens

    @property
    def captured_batches(self) -> tuple[int, ...]:
        return tuple(sorted(self._graphs))

    def forward(self, embeds: torch.Tensor, cols: torch.Tensor, positions: torch.Tensor,
                new_valid: torch.Tensor) -> torch.Tensor:
        """(B,K,H) embeddings written to cache columns `cols` (K,) at rotary `positions` (B,K); `new_valid`
        (B,K) marks which of them later tokens may attend to. Returns final-norm states (B,K,H)."""
        batch, k_len, _ = embeds.shape
        cache = self.cache
        cache.valid[:batch].index_copy_(1, cols, new_valid)
        causal = cache.columns[None, :] <= cols[:, None]  # (K, T)
        allowed = cache.valid[:batch, None, None, :] & causal[None, None]  # (B,1,K,T)
        # the additive mask SDPA would make of the boolean one in every layer, made once per forward
        mask = torch.zeros(allowed.shape, device=self.device, dtype=self.dtype).masked_fill_(~allowed, float("-inf"))
        cos, sin = self._cos[positions], self._sin[positions]
        x = embeds
        gqa = self.kv_heads != self.num_heads
        kernels = self.kernels
        for i, layer in enumerate(self.layers):
            fused = self._fused[i]
            attn = layer.self_attn
            keys, values = cache.keys[i, :batch], cache.values[i, :batch]
            if fused is not None:
                q = kernels.attention_inputs_to_cache(x, fused, cos, sin, keys, values, cols, self.num_heads,
                                                      self.kv_heads, self.head_dim)
            else:
                h = layer.input_layernorm(x)
                q = attn.q_proj(h).view(batch, k_len, self.num_heads, self.head_dim).transpose(1, 2)
                k = attn.k_proj(h).view(batch, k_len, self.kv_heads, self.head_dim).transpose(1, 2)
                v = attn.v_proj(h).view(batch, k_len, self.kv_heads, self.head_dim).transpose(1, 2)
                q, k = apply_rotary_pos_emb(q, k, cos, sin)
                keys.index_copy_(2, cols, k)
                values.index_copy_(2, cols, v)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=gqa)
            if fused is not None:
                x = kernels.post(x, out, fused)
            else:
                x = x + attn.o_proj(out.transpose(1, 2).reshape(batch, k_len, -1))
                x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.model.norm(x)

    def prefill(self, embeds: Sequence[torch.Tensor]) -> torch.Tensor:
        """Reset the cache and run the prompts (each (L_b, H)) right-padded in one forward; returns each
        row's last state (B, H). Row b's tokens get rotary positions 0..L_b-1 whatever the padding."""
        batch = len(embeds)
        if not 1 <= batch <= self.cache.max_batch:
            raise InvalidInputError(f"batch of {batch} prompts; the decoder holds 1..{self.cache.max_batch}")
        lens = [int(e.shape[0]) for e in embeds]
        width = max(lens)
        if width > self.max_prompt_len:
            raise InvalidInputError(f"prompt of {width} tokens exceeds the static cache's {self.max_prompt_len}")
        padded = torch.zeros((batch, width, self.hidden_size), device=self.device, dtype=self.dtype)
        for b, e in enumerate(embeds):
            padded[b, : lens[b]] = e.to(self.dtype)
        self.cache.reset()
        cols = self.cache.columns[:width]
        lens_t = torch.tensor(lens, device=self.device)
        hidden = self.forward(padded, cols, cols[None].expand(batch, width), cols[None] < lens_t[:, None])
        self.cache.length = width
        self._row_pos[:batch] = lens_t
        return hidden[torch.arange(batch, device=self.device), lens_t - 1]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append K tokens per row (B,K) in one forward after the cache's last column; returns (B,K,H).
        With `truncate` this is the draft-verify primitive (any K that fits the cache)."""
        batch, k_len = tokens.shape
        start = self.cache.length
        if start + k_len > self.cache.max_len:
            raise InvalidInputError(f"{k_len} more tokens overflow the static cache ({start}/{self.cache.max_len})")
        cols = self.cache.columns[start : start + k_len]
        offsets = torch.arange(k_len, device=self.device)
        positions = self._row_pos[:batch, None] + offsets[None]
        embeds = self.model.embed_tokens(tokens.to(self.device))
        valid = torch.ones((batch, k_len), device=self.device, dtype=torch.bool)
        hidden = self.forward(embeds, cols, positions, valid)
        self.cache.length = start + k_len
        self._row_pos[:batch] += k_len
        return hidden

    def truncate(self, n: int) -> None:
        """Roll the cache back to n columns (positions follow: every row advanced by the same columns)."""
        dropped = self.cache.length - n
        self.cache.truncate(n)
        self._row_pos -= dropped

    # ----------------------------------------------------------------------------------------- greedy loop
    def _state(self, batch: int) -> _LoopState:
        if batch not in self._states:
            self._states[batch] = _LoopState(
                batch, self.hidden_size, self.max_new_tokens, self.seg_token_ids, self.eos_token_id, self.device,
                self.dtype,
            )
        return self._states[batch]

    def _loop_step(self, s: _LoopState) -> None:
        """One greedy token for every row, all on the device (this is what the CUDA graph records)."""
        batch = s.hidden.shape[0]
        token = self.llm.lm_head(s.hidden).argmax(dim=-1)  # (B,)
        s.tokens.index_copy_(1, s.step, token[:, None])
        is_seg = (token[:, None] == s.seg_ids[None]).any(dim=-1)
        first_seg = is_seg & (s.seg_index < 0) & ~s.done
        s.seg_hidden.copy_(torch.where(first_seg[:, None], s.hidden, s.seg_hidden))
        s.seg_index.copy_(torch.where(first_seg, s.step, s.seg_index))
        s.seg_token.copy_(torch.where(first_seg, token, s.seg_token))
        stop = ~s.done & ((token == s.eos) | (is_seg & s.stop_at_mask) | (s.step + 1 >= s.limit))
        s.stop_len.copy_(torch.where(stop, s.step + 1, s.stop_len))
        s.done.logical_or_(stop)
        cols = s.col0 + s.step
        positions = (s.pos0 + s.step)[:, None]
        valid = torch.ones((batch, 1), device=self.device, dtype=torch.bool)
        hidden = self.forward(self.model.embed_tokens(token[:, None]), cols, positions, valid)
        s.hidden.copy_(hidden[:, 0])
        s.step.add_(1)

    def _capture_step(self, batch: int) -> torch.cuda.CUDAGraph | None:
        """The single-token step of `batch` rows recorded as a CUDA graph (warm-up on a side stream first);
        None, with a warning, where it cannot be captured."""
        s = self._state(batch)
        dummy = torch.zeros((batch, self.hidden_size), device=self.device, dtype=self.dtype)
        s.start(dummy, torch.ones(batch, device=self.device, dtype=torch.long), 1, True, 2)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                s.step.zero_()
                self._loop_step(s)
        torch.cuda.current_stream(self.device).wait_stream(side)
        s.step.zero_()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._loop_step(s)
        except RuntimeError as err:  # e.g. a quantised kernel that cannot be captured: stay eager
            LOG.warning("CUDA graph capture failed for batch %d (%s); this batch size decodes eagerly", batch, err)
            torch.cuda.synchronize(self.device)
            return None
        finally:
            self.cache.reset()
        return graph

    def _step_ms(self, graph: torch.cuda.CUDAGraph, batch: int, repeats: int = 20) -> float:
        """Median milliseconds of one replay of a captured step (its step counter rewound before each)."""
        s = self._state(batch)
        times = []
        for _ in range(repeats + 1):
            s.step.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        self.cache.reset()
        return statistics.median(times[1:])

    def _probe_state(self, graph: torch.cuda.CUDAGraph) -> torch.Tensor:
        """The state a captured 1-row step makes of a fixed random one (float32, (1, H))."""
        s = self._state(1)
        g = torch.Generator(device=self.device).manual_seed(0)
        probe = torch.randn((1, self.hidden_size), generator=g, device=self.device).to(self.dtype)
        s.start(probe, torch.ones(1, device=self.device, dtype=torch.long), 1, True, 2)
        graph.replay()
        out = s.hidden.float().clone()
        self.cache.reset()
        return out

    def _prepare_gemv(self, batch_sizes: Sequence[int]) -> None:
        """Tune the Triton kernels' launches for this model's layers, then capture the 1-row step with them
        (on Hopper also launched as programmatic dependents) and with cuBLAS. A Triton variant is used only if
        its step makes the same state of a probe as cuBLAS's (cosine at least `GEMV_AGREEMENT`: a kernel that
        computes wrongly on this GPU never decodes); the fastest usable one is taken ('auto' counts cuBLAS
        among them, 'on' only if no Triton variant is usable). `gemv_choice` holds every step time, the
        agreements and the outcome."""
        kernels = self.kernels
        if not self._gemv_possible or self.gemv_choice is not None or kernels.gemv_failure is not None:
            return
        layer = next(f for f in self._fused if f is not None)  # _gemv_possible: there is one
        try:
            kernels.tuner.tune(layer.gemv_cases(1), self.device, self.dtype)
        except Exception as err:  # a Triton that cannot build the kernels on this GPU
            kernels._gemv_failed(err)
            return
        options = {"triton": (True, False), "cublas": (False, False)}
        if decode_kernels.pdl_supported(self.device):
            options = {"triton+pdl": (True, True), **options}
        timed, states, failures = {}, {}, {}
        for name, (use, pdl) in options.items():
            kernels.gemv, kernels.pdl, kernels.gemv_failure = use, pdl, None
            graph = self._capture_step(1)
            if graph is None or (use and kernels.gemv_failure is not None):  # failed in capture or warm-up
                failures[name] = kernels.gemv_failure or "capture failed"
                timed[name], states[name] = float("inf"), None
            else:
                timed[name], states[name] = self._step_ms(graph, 1), self._probe_state(graph)
            del graph
        reference = states["cublas"]
        agreement = {name: float(F.cosine_similarity(states[name], reference).min())
                     if states[name] is not None and reference is not None else float("nan")
                     for name in options if name != "cublas"}
        for name, cos in agreement.items():
            if states[name] is not None and not cos >= GEMV_AGREEMENT:
                LOG.warning("the Triton decode kernels (%s) disagree with cuBLAS on this GPU (cosine %.4f of a step's "
                            "state); they are not used", name, cos)
        usable = [name for name, cos in agreement.items() if cos >= GEMV_AGREEMENT]
        if self.gemv_mode == "auto":
            usable.append("cublas")
        using = min(usable, key=timed.get) if usable else "cublas"
        kernels.gemv, kernels.pdl = options[using]
        kernels.gemv_failure = "; ".join(f"{name}: {err}" for name, err in failures.items()) or None
        self.gemv_choice = {"step_ms": timed, "agreement": agreement, "using": using}
        LOG.info("decode step %s; state cosine against cuBLAS %s: using %s",
                 ", ".join(f"{name} {ms:.3f} ms" for name, ms in timed.items()),
                 ", ".join(f"{name} {cos:.5f}" for name, cos in agreement.items()), using)

    def capture(self, batch_sizes: Sequence[int] = (1, 2)) -> None:
        """Record the single-token step as one CUDA graph per batch size (warm-up on a side stream first)."""
        if self.device.type != "cuda":
            return
        self._prepare_gemv(batch_sizes)
        for batch in batch_sizes:
            if batch in self._graphs:
                continue
            graph = self._capture_step(batch)
            if graph is not None:
                self._graphs[batch] = graph

    def generate(
        self,
        embeds: Sequence[torch.Tensor],
        max_new_tokens: int,
        stop_at_mask: bool = True,
    ) -> DecodeResult:
        """Greedy answers for 1..max_batch prompts (each (L_b, H) embeddings incl. the image)."""
        if not 1 <= max_new_tokens <= self.max_new_tokens:
            raise InvalidInputError(f"max_new_tokens {max_new_tokens} outside this decoder's 1..{self.max_new_tokens}")
        sync = self.device.type == "cuda"
        t0 = time.perf_counter()
        last = self.prefill(embeds)
        batch = len(embeds)
        s = self._state(batch)
        s.start(last, self._row_pos[:batch], self.cache.length, stop_at_mask, max_new_tokens)
        if sync:
            torch.cuda.synchronize(self.device)
        t1 = time.perf_counter()
        graph = self._graphs.get(batch)
        steps = 0
        pending: deque = deque()
        while steps < max_new_tokens:
            if graph is not None:
                graph.replay()
            else:
                self._loop_step(s)
            steps += 1
            pending.append(self._readback.post(s.done))
            if len(pending) > 1 and self._readback.value(pending.popleft()):  # the step before this one
                break
        stop_len = s.stop_len.tolist()  # the one read-back of the answer (syncs)
        tokens = s.tokens.tolist()
        seg_index = s.seg_index.tolist()
        seg_token = s.seg_token.tolist()
        eos = self.eos_token_id
        generated, reasons, seg_hidden = [], [], []
        for b in range(batch):
            row = tokens[b][: stop_len[b]]
            generated.append(row)
            if seg_index[b] >= 0 and stop_at_mask and seg_index[b] == len(row) - 1:
                reasons.append("mask")
            elif row and row[-1] == eos:
                reasons.append("eos")
            else:
                reasons.append("length")
            seg_hidden.append(s.seg_hidden[b : b + 1].clone() if seg_index[b] >= 0 else None)
        self.cache.length += steps  # the loop's columns; the next prefill resets the cache
        self._row_pos[:batch] += steps
        return DecodeResult(
            generated,
            reasons,
            [i if i >= 0 else None for i in seg_index],
            [t if t >= 0 else None for t in seg_token],
            seg_hidden,
            prefill_s=t1 - t0,
            decode_s=time.perf_counter() - t1,
            forwards=steps,
        )

    # ----------------------------------------------------------------------------------------- draft and verify
    @property
    def captured_verify(self) -> tuple[tuple[int, int], ...]:
        """(batch, K) of the captured verify graphs."""
        return tuple(sorted(self._verify_graphs))

    def _verify_buffers(self, batch: int, k: int) -> _VerifyBuffers:
        if (batch, k) not in self._verify:
            self._verify[(batch, k)] = _VerifyBuffers(batch, k + 1, self.hidden_size, self.device, self.dtype)
        return self._verify[(batch, k)]

    def _verify_forward(self, v: _VerifyBuffers) -> None:
        """Every row's K+1 tokens after cache column `col0` in one forward; their final-norm states and LM-head
        argmax land in `v` (this is what a verify graph records)."""
        batch, width = v.tokens.shape
        cols = v.col0 + v.offsets
        positions = self._row_pos[:batch, None] + v.offsets[None]
        valid = torch.ones((batch, width), device=self.device, dtype=torch.bool)
        hidden = self.forward(self.model.embed_tokens(v.tokens), cols, positions, valid)
        v.hidden.copy_(hidden)
        v.argmax.copy_(self.llm.lm_head(hidden).argmax(dim=-1))

    def capture_verify(self, batch_sizes: Sequence[int] = (1, 2), buckets: Sequence[int] = (0, 2, 4, 8)) -> None:
        """Record the verify forward as one CUDA graph per (batch size, K bucket); drafts are padded up to the
        next bucket. The graphs share one memory pool (they run one after the other; outputs live outside)."""
        if self.device.type != "cuda":
            return
        for batch in batch_sizes:
            for k in sorted({int(b) for b in buckets}):
                if (batch, k) in self._verify_graphs:
                    continue
                v = self._verify_buffers(batch, k)
                v.col0.fill_(1)
                self._row_pos[:batch] = 1
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    for _ in range(2):
                        self._verify_forward(v)
                torch.cuda.current_stream(self.device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                try:
                    with torch.cuda.graph(graph, pool=self._verify_pool):
                        self._verify_forward(v)
                except RuntimeError as err:
                    LOG.warning("CUDA graph capture of the verify step (batch %d, K=%d) failed (%s); it runs eagerly",
                                batch, k, err)
                    torch.cuda.synchronize(self.device)
                    continue
                finally:
                    self.cache.reset()
                    self._row_pos.zero_()
                if self._verify_pool is None:
                    self._verify_pool = graph.pool()
                self._verify_graphs[(batch, k)] = graph

    def _bucket(self, batch: int, wanted: int, room: int) -> int:
        """The verify width for `wanted` draft tokens: exact when eager, else the captured bucket that holds
        them (or the largest one that fits the cache)."""
        buckets = sorted(k for b, k in self._verify_graphs if b == batch and k <= room)
        if not buckets:
            return min(wanted, room)
        return next((k for k in buckets if k >= wanted), buckets[-1])

    def _compact(self, first: int, batch: int, done: Sequence[bool]) -> None:
        """Move each unfinished row's valid answer columns (from `first` on) to the left, closing the holes
        rows that accepted fewer drafts left; finished rows' columns are dropped. Keys carry their rotary
        positions, so a column's index does not matter to attention."""
        cache, end = self.cache, self.cache.length
        kept = 0
        for b in range(batch):
            cols = torch.nonzero(cache.valid[b, first:end]).flatten() + first
            cache.valid[b, first:end] = False
            if done[b] or cols.numel() == 0:
                continue
            n = int(cols.numel())
            cache.keys[:, b, :, first : first + n] = cache.keys[:, b].index_select(2, cols)
            cache.values[:, b, :, first : first + n] = cache.values[:, b].index_select(2, cols)
            cache.valid[b, first : first + n] = True
            kept = max(kept, n)
        cache.length = first + kept

    def generate_drafted(
        self,
        embeds: Sequence[torch.Tensor],
        max_new_tokens: int,
        drafter: Drafter,
        max_draft: int = 8,
        stop_at_mask: bool = True,
    ) -> DecodeResult:
        """Greedy answers, identical to `generate`, from fewer forwards: each forward verifies up to
        `max_draft` drafted tokens per row and keeps the prefix the model's argmax agrees with plus its own
        next token. A row's mask-token state is the verify row that emitted it, as in plain decoding.

        Rows accepting at different rates leave masked holes in the shared cache columns; when they leave no
        room for a full draft, `_compact` closes them."""
        if not 1 <= max_new_tokens <= self.max_new_tokens:
            raise InvalidInputError(f"max_new_tokens {max_new_tokens} outside this decoder's 1..{self.max_new_tokens}")
        batch = len(embeds)
        sync = self.device.type == "cuda"
        t0 = time.perf_counter()
        last = self.prefill(embeds)
        first = self.llm.lm_head(last).argmax(dim=-1).tolist()
        t1 = time.perf_counter()
        seg_set, eos = set(self.seg_token_ids), self.eos_token_id
        generated: list[list[int]] = [[] for _ in range(batch)]
        reasons = ["length"] * batch
        seg_index: list[int | None] = [None] * batch
        seg_token: list[int | None] = [None] * batch
        seg_hidden: list[torch.Tensor | None] = [None] * batch
        done = [False] * batch

        def emit(b: int, token: int, state: torch.Tensor) -> bool:
            """Record one greedy token of row b (and its state if it is the first mask token); True = stop."""
            generated[b].append(token)
            is_seg = token in seg_set
            if is_seg and seg_index[b] is None:
                seg_index[b], seg_token[b], seg_hidden[b] = len(generated[b]) - 1, token, state.clone()
            if is_seg and stop_at_mask:
                reasons[b] = "mask"
            elif token == eos:
                reasons[b] = "eos"
            elif len(generated[b]) < max_new_tokens:
                return False
            done[b] = True
            return True

        for b in range(batch):
            emit(b, int(first[b]), last[b : b + 1])
        forwards = accepted = 0
        lengths = [DraftLength(max_draft) for _ in range(batch)]
        answer_col = self.cache.length
        fed = [int(e.shape[0]) for e in embeds]  # each row's rotary position of its next fed token
        while not all(done):
            if batch > 1 and self.cache.max_len - self.cache.length - 1 < max_draft:
                self._compact(answer_col, batch, done)
            start = self.cache.length
            # the K+1 fed tokens need cache columns and rotary positions (rows with holes run ahead of columns)
            room = min(self.cache.max_len - start, self.cache.max_len - max(fed)) - 1
            drafts = [[] if done[b] else drafter(b, generated[b], min(lengths[b].next(), room)) for b in range(batch)]
            k = self._bucket(batch, max(len(d) for d in drafts), room)
            rows = []
            for b, d in enumerate(drafts):
                d = drafts[b] = d[:k]
                rows.append([generated[b][-1], *d, *([d[-1] if d else generated[b][-1]] * (k - len(d)))])
            v = self._verify_buffers(batch, k)
            v.tokens.copy_(torch.tensor(rows, dtype=torch.long))
            v.col0.fill_(start)
            graph = self._verify_graphs.get((batch, k))
            if graph is not None:
                graph.replay()
            else:
                self._verify_forward(v)
            forwards += 1
            argmax = v.argmax.tolist()  # the one host read-back per forward
            keep = [0] * batch
            for b in range(batch):
                if done[b]:
                    continue
                row, out = rows[b], argmax[b]
                j = 0
                while j < k and out[j] == row[j + 1]:
                    j += 1
                keep[b] = j + 1  # the fed token and the accepted drafts stay in the cache
                lengths[b].update(len(drafts[b]), min(j, len(drafts[b])))
                for i in range(j + 1):
                    accepted += int(i < j)
                    if emit(b, int(out[i]), v.hidden[b, i : i + 1]):
                        break
            for b in range(batch):
                if keep[b] < k + 1:
                    self.cache.valid[b, start + keep[b] : start + k + 1] = False
            self._row_pos[:batch] += torch.tensor(keep, device=self.device)
            fed = [f + k_b for f, k_b in zip(fed, keep)]
            self.cache.length = start + max(keep)
        if sync:
            torch.cuda.synchronize(self.device)
        return DecodeResult(
            generated,
            reasons,
            seg_index,
            seg_token,
            seg_hidden,
            prefill_s=t1 - t0,
            decode_s=time.perf_counter() - t1,
            forwards=forwards,
            accepted=accepted,
        )
