"""Where one decode step's time goes, against what the GPU can do: one run, one table.

    python -m ivlm_core.bench.decode_profile            # 13B-size LLM, random bf16, on a GPU
    python -m ivlm_core.bench.decode_profile --tiny     # tiny model on CPU (checks the script; figures mean nothing)

`model_latency` says how far decoding is from the weight-bandwidth floor; this says why. It measures, on the
same random 13B-size LLM:

- `copy_gbs`: a large device-to-device copy (bytes read + written / time): the bandwidth this card really
  gives, as opposed to the data-sheet figure the floor uses;
- `gemm_ms[M]`: the decode step's matrix products alone (every layer's q/k/v, output, gate/up and down
  weights and the LM head, M tokens each) replayed as one CUDA graph: the cost of reading the weights with
  cuBLAS, i.e. the best any decoder built on these kernels can do, for 1 token (plain decoding) and for the
  widths of the draft-verify forwards;
- `triton_gemv_ms[M=1]`: the same products as `decode_kernels`' Triton matrix-vector kernel (each shape's
  launch tuned first), where Triton runs: whether it reads the weights faster than cuBLAS;
- per `StaticDecoder` variant (HF modules as they are / fused q,k,v and gate,up weights / fused + the layer
  glue compiled with inductor / that + the Triton products with norm, SiLU·up and residual folded in):
  `step_ms` one captured greedy step (what plain decoding pays per token),
  `verify_ms[K]` one captured verify forward of K drafts (K+1 tokens), `setup_s` building + capturing (+
  compiling), and the number of kernels one eager step launches (torch.profiler, when it works here).

Timings are CUDA-event medians of `--repeats` graph replays after a warm-up; mean and worst are printed too.
Random weights: timing is honest, nothing here is about accuracy.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from ivlm_core.bench.model_latency import build_random_model, decode_weight_bytes, gemv_note, memory_bandwidth_gbs
from ivlm_core.model import decode_kernels
from ivlm_core.model.decode_kernels import GemvCase, GemvTuner
from ivlm_core.model.decoding import StaticDecoder
from ivlm_core.model.fused_layers import FusedLayer

VARIANTS = (  # name, fuse, compile_mode, gemv_mode
    ("modules", False, "off", "off"),
    ("fused", True, "off", "off"),
    ("fused+compiled", True, "on", "off"),
    ("fused+compiled+triton", True, "on", "on"),
)
VERIFY_K = (0, 2, 4, 8)


def _timed(fn, repeats: int, device: torch.device) -> list[float]:
    """Milliseconds of each of `repeats` calls (CUDA events on a GPU, the host clock on CPU)."""
    fn()
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def _stats(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} (mean {statistics.fmean(values):.3f} worst {max(values):.3f})"


def _graphed(fn, device: torch.device):
    """`fn` recorded as a CUDA graph (warmed up on a side stream first); plain `fn` on CPU."""
    if device.type != "cuda":
        return fn
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        fn()
        fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def copy_bandwidth_gbs(device: torch.device, gigabytes: float, repeats: int) -> float:
    src = torch.empty(int(gigabytes * 2**30) // 2, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    ms = statistics.median(_timed(lambda: dst.copy_(src), repeats, device))
    moved = 2 * src.nelement() * src.element_size()
    return moved / (ms * 1e-3) / 1e9


def step_weights(llm) -> list[torch.Tensor]:
    """Every weight one decode step reads: q/k/v and gate/up as one tensor each, as the fused decoder has them."""
    weights = []
    for layer in llm.model.layers:
        fused = FusedLayer.from_module(layer)  # the fused decoder's own tensors (no copy once fused)
        if fused is None:
            raise RuntimeError("decode_profile measures plain bf16/fp32 weights; this layer cannot be fused")
        weights += [fused.qkv, fused.out, fused.gate_up, fused.down]
    weights.append(llm.lm_head.weight)
    return weights


def triton_chain(llm, repeats: int, device: torch.device) -> tuple[list[float], GemvTuner]:
    """`gemm_chain` for one row through the Triton kernel (no fold-ins), each shape's launch tuned first."""
    weights = step_weights(llm)
    tuner = GemvTuner()
    cases = {w.shape: GemvCase(w.shape[0], w.shape[1], 1) for w in weights}
    tuner.tune(cases.values(), device, weights[0].dtype)
    inputs = {w.shape[1]: torch.randn(1, w.shape[1], device=device, dtype=w.dtype) for w in weights}

    def chain() -> None:
        for w in weights:
            decode_kernels.gemv(inputs[w.shape[1]], w, config=tuner.config(cases[w.shape]))

    return _timed(_graphed(chain, device), repeats, device), tuner


def gemm_chain(llm, widths: tuple[int, ...], repeats: int, device: torch.device) -> dict[int, list[float]]:
    """Milliseconds of every weight product of one forward of M tokens (graph-replayed), per M: q/k/v and
    gate/up as one product each, as the fused decoder runs them."""
    weights = step_weights(llm)
    out: dict[int, list[float]] = {}
    for width in widths:
        inputs = {w.shape[1]: torch.randn(width, w.shape[1], device=device, dtype=w.dtype) for w in weights}

        def chain(inputs=inputs) -> None:
            for w in weights:
                F.linear(inputs[w.shape[1]], w)

        out[width] = _timed(_graphed(chain, device), repeats, device)
    return out


def kernels_per_step(decoder: StaticDecoder, device: torch.device) -> str:
    """Kernels one eager greedy step launches, and the three costliest by name (torch.profiler)."""
    if device.type != "cuda":
        return "n/a (CPU)"
    try:
        from torch.profiler import ProfilerActivity, profile

        s = decoder._state(1)
        s.step.zero_()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            decoder._loop_step(s)
            torch.cuda.synchronize(device)
        events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        by_name: dict[str, float] = {}
        for e in events:
            by_name[e.name] = by_name.get(e.name, 0.0) + e.device_time
        top = sorted(by_name.items(), key=lambda kv: -kv[1])[:3]
        return f"{len(events)} kernels; top: " + "; ".join(f"{n[:60]} {t / 1e3:.2f}ms" for n, t in top)
    except Exception as err:  # the profiler needs CUPTI; a missing one must not stop the timings
        return f"profiler unavailable ({type(err).__name__}: {str(err)[:80]})"


def profile_variant(llm, name: str, fuse: bool, compile_mode: str, gemv_mode: str, prompt_len: int, repeats: int,
                    device: torch.device) -> str:
    t0 = time.perf_counter()
    decoder = StaticDecoder(llm, [llm.config.vocab_size - 3], 2, prompt_len + 96, 64, max_batch=1,
                            compile_mode=compile_mode, fuse=fuse, gemv_mode=gemv_mode)
    decoder.capture((1,))
    decoder.capture_verify((1,), VERIFY_K)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    setup_s = time.perf_counter() - t0
    hidden = llm.config.hidden_size
    prompt = torch.randn(prompt_len, hidden, device=device, dtype=decoder.dtype)
    last = decoder.prefill([prompt])
    s = decoder._state(1)
    graph = decoder._graphs.get(1)

    taken = [0]

    def step() -> None:
        if taken[0] >= decoder.max_new_tokens - 2:  # restart before the answer columns run out
            s.start(last, decoder._row_pos[:1], prompt_len, False, decoder.max_new_tokens)
            taken[0] = 0
        graph.replay() if graph is not None else decoder._loop_step(s)
        taken[0] += 1

    s.start(last, decoder._row_pos[:1], prompt_len, False, decoder.max_new_tokens)
    step_ms = _timed(step, repeats, device)
    verify = {}
    for k in VERIFY_K:
        v = decoder._verify_buffers(1, k)
        v.col0.fill_(prompt_len)
        g = decoder._verify_graphs.get((1, k))
        verify[k] = statistics.median(_timed(g.replay if g is not None else lambda v=v: decoder._verify_forward(v),
                                             repeats, device))
    count = kernels_per_step(decoder, device)
    ks = " ".join(f"K{k}={ms:.3f}" for k, ms in verify.items())
    if gemv_mode != "off":
        count += f"; {gemv_note(decoder)}"
    return (f"{name:15s} setup_s={setup_s:.1f} step_ms={_stats(step_ms)} verify_ms {ks} "
            f"K8/step={verify[8] / statistics.median(step_ms):.2f}\n{'':15s} eager step: {count}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (a smoke run of this script)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--prompt-len", type=int, default=700, help="prompt columns before decoding (~image + text)")
    parser.add_argument("--bandwidth-gbs", type=float, default=None)
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    model = build_random_model(args.tiny or device.type == "cpu", device, dtype)
    llm = model.model.llava.llm
    nbytes = decode_weight_bytes(model)
    sheet = memory_bandwidth_gbs(device, args.bandwidth_gbs)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device={name} dtype={dtype} torch={torch.__version__} weights={nbytes / 1e9:.2f}GB "
          f"prompt_len={args.prompt_len} repeats={args.repeats}")
    copy = copy_bandwidth_gbs(device, 0.01 if device.type == "cpu" else 4.0, args.repeats)
    print(f"copy_gbs={copy:.0f} sheet_gbs={sheet:.0f} floor_ms sheet={nbytes / sheet / 1e6:.3f} "
          f"measured_copy={nbytes / copy / 1e6:.3f}")
    lines = []
    for variant, fuse, mode, gemv in VARIANTS:  # each decoder (and its cache) is freed before the next is built
        if gemv == "on" and not decode_kernels.available(device):
            lines.append(f"{variant:15s} skipped: the Triton decode kernels cannot run here (no Triton, or no GPU)")
            continue
        lines.append(profile_variant(llm, variant, fuse, mode, gemv, args.prompt_len, args.repeats, device))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    chain = gemm_chain(llm, (1, 2, 3, 5, 9), args.repeats, device)
    for width, ms in chain.items():
        print(f"gemm_ms[M={width}]={_stats(ms)} effective_gbs={nbytes / (statistics.median(ms) * 1e-3) / 1e9:.0f}")
    if decode_kernels.available(device):
        ms, tuner = triton_chain(llm, args.repeats, device)
        print(f"triton_gemv_ms[M=1]={_stats(ms)} effective_gbs={nbytes / (statistics.median(ms) * 1e-3) / 1e9:.0f}")
        for case, timed in tuner.timings.items():
            best = tuner.configs[case]
            print(f"  {case.n}x{case.k}: best {best.block_n}/{best.block_k}/{best.num_warps}w{best.num_stages}s "
                  + " ".join(f"{c.block_n}/{c.block_k}/{c.num_warps}w{c.num_stages}s={t * 1e3:.1f}us"
                             for c, t in timed.items()))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
