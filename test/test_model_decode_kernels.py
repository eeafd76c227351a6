"""The Triton decode products (issue 9): the same numbers as the eager modules, the decoder's answers
unchanged with them, a failure that hands the products back to cuBLAS, and kernels that the real compiler
builds for Hopper (sm_90a) without spilling registers.

No GPU here: the numbers run in Triton's interpreter (`TRITON_INTERPRET=1`, numpy on the CPU), and the
Hopper build runs Triton's own compiler and ptxas ahead of time, which needs no device."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from ivlm_core.errors import InvalidInputError
from ivlm_core.model import decode_kernels, fused_layers
from ivlm_core.model.decode_kernels import CANDIDATES, DEFAULT_CONFIG, GemvConfig, gemv
from ivlm_core.model.decoding import StaticDecoder
from ivlm_core.model.fused_layers import resolve_gemv, rms_norm

triton = pytest.importorskip("triton")


@pytest.fixture
def interpreter():
    """These run the kernels on CPU tensors: in Triton's interpreter, which conftest turns on without a GPU."""
    if not decode_kernels.interpreted():
        pytest.skip("TRITON_INTERPRET is not 1 (a CUDA machine: the cuda-marked tests run the kernels there)")


def _reference(x, w, norm_weight=None, gated=False, residual=None):
    """What the eager modules compute (LlamaRMSNorm, Linear, SiLU·up, residual add) in the same dtype."""
    h = rms_norm(x, norm_weight, 1e-6) if norm_weight is not None else x
    y = F.linear(h, w)
    if gated:
        gate, up = y.chunk(2, dim=-1)
        y = F.silu(gate) * up
    return residual + y if residual is not None else y


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 2, 3, 4])
def test_products_match_the_eager_modules(interpreter, dtype, rows) -> None:
    g = torch.Generator().manual_seed(rows)
    k, n = 72, 44  # neither a multiple of the blocks below: the masked edges are exercised
    x = torch.randn(rows, k, generator=g).to(dtype)
    w = (torch.randn(n, k, generator=g) / 8).to(dtype)
    norm = (1 + torch.randn(k, generator=g) / 4).to(dtype)
    res = torch.randn(rows, n // 2, generator=g).to(dtype)
    config = GemvConfig(8, 32, 4, 1)
    def close(out: torch.Tensor, ref: torch.Tensor) -> None:
        # fp32: to a rounding; bf16: a few ulps of the output's scale (each side rounds its products and the
        # gate/up values to bf16 at its own point of a different summation order, and SiLU·up amplifies that)
        scale = 1e-5 if dtype == torch.float32 else 3e-2 * float(ref.abs().max())
        torch.testing.assert_close(out.float(), ref.float(), atol=scale, rtol=1e-5 if dtype == torch.float32 else 0)

    for kwargs, ref in (
        ({}, _reference(x, w)),
        ({"norm_weight": norm, "eps": 1e-6}, _reference(x, w, norm)),
        ({"norm_weight": norm, "eps": 1e-6, "gated": True}, _reference(x, w, norm, gated=True)),
    ):
        close(gemv(x, w, config=config, **kwargs), ref)
    half = w[: n // 2]
    close(gemv(x, half, residual=res, config=config), _reference(x, half, residual=res))
    assert gemv(x[None], w, config=config).shape == (1, rows, n)  # leading dims kept


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("batch", "tokens"), [(1, 1), (2, 1), (1, 3), (2, 2)])
def test_qkv_rope_matches_the_modules_and_writes_the_cache(interpreter, dtype, batch, tokens) -> None:
    """Norm + q/k/v product + rotary in one kernel, k and v landing in the cache columns of their tokens, with
    grouped kv heads (4 query heads over 2 kv heads)."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from ivlm_core.model.decode_kernels import qkv_rope
    from ivlm_core.model.fused_layers import attention_inputs

    g = torch.Generator().manual_seed(batch * 10 + tokens)
    heads, kv_heads, head_dim, hidden, width = 4, 2, 16, 48, 20
    rotary = LlamaRotaryEmbedding(LlamaConfig(hidden_size=heads * head_dim, num_attention_heads=heads,
                                              num_key_value_heads=kv_heads, head_dim=head_dim))
    cos, sin = rotary(torch.zeros(1, 1, dtype=dtype), torch.arange(width)[None])
    positions = torch.randint(0, width, (batch, tokens), generator=g)
    cos, sin = cos[0][positions], sin[0][positions]
    x = torch.randn(batch, tokens, hidden, generator=g).to(dtype)
    w = (torch.randn((heads + 2 * kv_heads) * head_dim, hidden, generator=g) / 6).to(dtype)
    norm = (1 + torch.randn(hidden, generator=g) / 5).to(dtype)
    cols = torch.tensor([5, 9, 11][:tokens])
    keys, values = (torch.zeros(batch, kv_heads, width, head_dim, dtype=dtype) for _ in range(2))
    q = qkv_rope(x, w, norm, 1e-6, cos, sin, cols, keys, values, heads, kv_heads, config=GemvConfig(4, 16, 4, 1))
    ref_q, ref_k, ref_v = attention_inputs(x, norm, w, cos, sin, 1e-6, heads, kv_heads, head_dim)
    ref_keys, ref_values = torch.zeros_like(keys), torch.zeros_like(values)
    ref_keys.index_copy_(2, cols, ref_k)
    ref_values.index_copy_(2, cols, ref_v)
    for out, ref in ((q, ref_q), (keys, ref_keys), (values, ref_values)):
        scale = 1e-5 if dtype == torch.float32 else 3e-2 * float(ref.abs().max())
        torch.testing.assert_close(out.float(), ref.float(), atol=scale, rtol=1e-5 if dtype == torch.float32 else 0)
    untouched = torch.ones(width, dtype=torch.bool)
    untouched[cols] = False
    assert not keys[:, :, untouched].any() and not values[:, :, untouched].any()  # only the tokens' columns


def test_out_of_range_calls_are_refused(interpreter) -> None:
    w = torch.randn(16, 32)
    with pytest.raises(ValueError, match="rows"):
        gemv(torch.randn(decode_kernels.MAX_ROWS + 1, 32), w)
    with pytest.raises(ValueError, match="does not take rows"):
        gemv(torch.randn(1, 31), w)
    with pytest.raises(ValueError, match="residual"):
        gemv(torch.randn(1, 32), w, residual=torch.randn(1, 15))


@pytest.fixture(scope="module")
def llm(private_tiny_models):
    return private_tiny_models["Gen"].model.llava.llm


def _decode(decoder: StaticDecoder, prompts: list[torch.Tensor]):
    with torch.inference_mode():
        states = decoder.prefill(prompts)
        result = decoder.generate(prompts, 8, stop_at_mask=False)
    return states, result


def _prompts(llm, count: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return [torch.randn(31 - 4 * i, llm.config.hidden_size, generator=g) for i in range(count)]


@pytest.mark.parametrize("batch", [1, 2])
def test_the_decoder_answers_the_same_with_the_triton_products(interpreter, llm, batch) -> None:
    prompts = _prompts(llm, batch)
    plain = StaticDecoder(llm, [5], 2, 64, 10, compile_mode="off", gemv_mode="off")
    ref_states, ref = _decode(plain, prompts)
    decoder = StaticDecoder(llm, [5], 2, 64, 10, compile_mode="off", gemv_mode="on")
    assert decoder.kernels.gemv and not plain.kernels.gemv
    calls = []
    with pytest.MonkeyPatch.context() as mp:  # count the products the decode steps really ran through Triton
        for name in ("gemv", "qkv_rope"):
            real = getattr(fused_layers, name)
            mp.setattr(fused_layers, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k))
        states, result = _decode(decoder, prompts)
    assert decoder.kernels.gemv and decoder.kernels.gemv_failure is None
    layers = len(llm.model.layers)
    # 4 kernels a layer (one of them q/k/v + rotary + cache write) for every decode step after the first
    assert calls.count("qkv_rope") >= layers * 7 and calls.count("gemv") >= 3 * layers * 7
    assert result.generated == ref.generated
    torch.testing.assert_close(states, ref_states)  # the prefill (many rows) stays on the modules' path
    # the state after the last decode step: every layer of every step ran through the Triton products
    torch.testing.assert_close(decoder._state(batch).hidden, plain._state(batch).hidden, atol=1e-5, rtol=1e-5)
    for a, b in zip(result.seg_hidden, ref.seg_hidden):
        assert (a is None) == (b is None)


def test_a_verify_forward_of_three_tokens_runs_them_too(interpreter, llm, monkeypatch) -> None:
    """Draft-and-verify feeds 1 + K tokens per row: up to 4 rows take the Triton kernels (3 rows here)."""
    prompts = _prompts(llm, 1)
    tokens = torch.tensor([[7, 11, 13]])
    rows = []
    real = fused_layers.qkv_rope
    monkeypatch.setattr(fused_layers, "qkv_rope", lambda x, *a, **k: rows.append(x.shape[1]) or real(x, *a, **k))
    out = {}
    for mode in ("off", "on"):
        decoder = StaticDecoder(llm, [5], 2, 64, 10, compile_mode="off", gemv_mode=mode)
        with torch.inference_mode():
            decoder.prefill(prompts)
            out[mode] = decoder.step(tokens)
            decoder.truncate(decoder.cache.length - 1)  # the verify roll-back, then one more token
            out[mode] = torch.cat([out[mode], decoder.step(tokens[:, :1])], dim=1)
    assert rows == [3, 3, 1, 1]  # both layers, for the 3-token verify and the 1-token step ("on" only)
    torch.testing.assert_close(out["on"], out["off"], atol=1e-5, rtol=1e-5)


def test_a_failing_product_hands_decoding_back_to_cublas(interpreter, llm, monkeypatch, caplog) -> None:
    prompts = _prompts(llm, 1)
    _, ref = _decode(StaticDecoder(llm, [5], 2, 64, 10, compile_mode="off", gemv_mode="off"), prompts)
    decoder = StaticDecoder(llm, [5], 2, 64, 10, compile_mode="off", gemv_mode="on")

    def broken(*args, **kwargs):
        raise RuntimeError("PassManager::run failed")

    monkeypatch.setattr(fused_layers, "gemv", broken)
    with caplog.at_level("WARNING"):
        _, result = _decode(decoder, prompts)
    assert not decoder.kernels.gemv and "PassManager" in decoder.kernels.gemv_failure
    assert "uses cuBLAS" in caplog.text
    assert result.generated == ref.generated


def test_gemv_mode_is_resolved_per_device(monkeypatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert resolve_gemv("auto", torch.device("cpu")) is False
    assert resolve_gemv("off", torch.device("cuda")) is False
    with pytest.raises(InvalidInputError, match="needs Triton and a CUDA device"):
        resolve_gemv("on", torch.device("cpu"))
    with pytest.raises(InvalidInputError, match="auto"):
        resolve_gemv("fast", torch.device("cpu"))


def test_tuning_off_the_gpu_keeps_the_default_launch_shape() -> None:
    tuner = decode_kernels.GemvTuner()
    case = decode_kernels.GemvCase(64, 32, 1, norm=True)
    tuner.tune([case], torch.device("cpu"), torch.float32)
    assert tuner.config(case) == DEFAULT_CONFIG and not tuner.timings


def test_wider_forwards_take_the_launch_tuned_for_one_row() -> None:
    tuner = decode_kernels.GemvTuner()
    one = decode_kernels.GemvCase(64, 32, 1, gated=True, norm=True)
    tuner.configs[one] = CANDIDATES[3]
    assert tuner.config(decode_kernels.GemvCase(64, 32, 3, gated=True, norm=True)) == CANDIDATES[3]
    assert tuner.config(decode_kernels.GemvCase(64, 32, 3, norm=True)) == DEFAULT_CONFIG  # another product
    assert decode_kernels.launch_blocks(CANDIDATES[3], 3) == (4, 16, 256)  # 4 rows: half the reduction chunk


HOPPER_BUILD = r"""
import json, subprocess, sys
from pathlib import Path
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from ivlm_core.model import decode_kernels

source, folder, out = decode_kernels._kernels(), Path(sys.argv[1]), []
ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
for name, rows, config, flags in json.loads(sys.argv[2]):
    kernel = getattr(source, name)
    config = decode_kernels.GemvConfig(*config)
    block_m, block_n, block_k = decode_kernels.launch_blocks(config, rows)
    if name == "qkv_rope_kernel":
        block_n = min(block_n, flags["HALF"])
    flags = {**flags, "BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k}
    names = kernel.arg_names
    signature = {n: "constexpr" if n in flags else "*i64" if n == "cols_ptr" else "*bf16" if n.endswith("_ptr")
                 else "fp32" if n == "eps" else "i32" for n in names}
    aligned = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
               if n.endswith("_ptr") or n == "K" or n.startswith(("stride", "sq_", "sk_", "sv_"))}
    built = triton.compile(ASTSource(kernel, signature, flags, aligned), target=GPUTarget("cuda", 90, 32),
                           options={"num_warps": config.num_warps, "num_stages": config.num_stages,
                                    "launch_pdl": flags["PDL"]})
    ptx = folder / f"{built.metadata.hash[:16]}.ptx"
    ptx.write_text(built.asm["ptx"])
    report = subprocess.run([str(ptxas), "-arch=sm_90a", "-v", str(ptx), "-o", str(ptx.with_suffix(".cubin"))],
                            capture_output=True, text=True, check=True).stderr
    out.append({"v4_loads": "ld.global.v4" in built.asm["ptx"], "report": report,
                "pdl": built.asm["ptx"].count("griddepcontrol"), "launch_pdl": built.metadata.launch_pdl})
print(json.dumps(out))
"""


def test_every_variant_builds_for_hopper_without_spills(tmp_path) -> None:
    """Triton's real compiler (not the interpreter, hence a process of its own) and ptxas, for sm_90a, with the
    16-byte alignment Triton specialises real weights on: every candidate launch shape for one row and the
    default one for 2, 3 and 4 rows, each with every fold-in the decoder uses, and the q/k/v + rotary + cache
    write kernel for 128-wide heads."""
    folds = [{"NORM": n, "GATED": g, "RESIDUAL": r, "PDL": p}
             for n, g, r in ((False, False, False), (True, False, False), (True, True, False), (False, False, True))
             for p in (False, True)]
    shapes = ((1, CANDIDATES), (2, (DEFAULT_CONFIG,)), (4, (DEFAULT_CONFIG,)))  # 3 rows launch as 4
    variants = [("gemv_kernel", m, list(vars(c).values()), f) for m, configs in shapes for c in configs for f in folds]
    variants += [("qkv_rope_kernel", m, list(vars(c).values()), {"HALF": 64, "PDL": p})  # 13B: 128-wide heads
                 for m, configs in shapes for c in configs for p in (False, True)]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", HOPPER_BUILD, str(tmp_path), json.dumps(variants)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for variant, built in zip(variants, json.loads(done.stdout.splitlines()[-1]), strict=True):
        report = built["report"]
        spills = [int(v) for v in re.findall(r"(\d+) bytes spill (?:stores|loads)", report)]
        assert built["v4_loads"], variant  # the weights stream in 16-byte loads
        assert spills and not any(spills), (variant, report)
        assert int(re.search(r"Used (\d+) registers", report).group(1)) <= 255, (variant, report)
        assert built["pdl"] == (2 if variant[3]["PDL"] else 0), variant  # wait + launch_dependents, or neither
        assert built["launch_pdl"] == variant[3]["PDL"]


# ---------------------------------------------------------------------------------------------- CUDA only
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_products_match_the_modules(dtype) -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    k, n = 1040, 3000  # not multiples of the blocks
    for rows in (1, 2, 3):  # every launch shape for one row (what tuning picks from), the default for 2 and 3-4
        x = torch.randn(rows, k, device="cuda", generator=g).to(dtype)
        w = (torch.randn(n, k, device="cuda", generator=g) / 32).to(dtype)
        norm = (1 + torch.randn(k, device="cuda", generator=g) / 4).to(dtype)
        res = torch.randn(rows, n // 2, device="cuda", generator=g).to(dtype)
        for config in CANDIDATES if rows == 1 and dtype == torch.bfloat16 else (DEFAULT_CONFIG,):  # compile time
            for kwargs, ref in (
                ({"norm_weight": norm, "eps": 1e-6}, _reference(x, w, norm)),
                ({"norm_weight": norm, "eps": 1e-6, "gated": True}, _reference(x, w, norm, gated=True)),
                ({"residual": res}, _reference(x, w[: n // 2], residual=res)),
            ):
                weight = w[: n // 2] if "residual" in kwargs else w
                out = gemv(x, weight, config=config, **kwargs).float()
                scale = 1e-4 if dtype == torch.float32 else 3e-2 * float(ref.abs().max())
                torch.testing.assert_close(out, ref.float(), atol=scale, rtol=1e-4 if dtype == torch.float32 else 0)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_graph_decoding_with_triton_products_equals_cublas(tiny_checkpoints, dtype) -> None:
    from ivlm_core.model.checkpoint import load_checkpoint

    model = load_checkpoint(tiny_checkpoints["Gen"], device="cuda", dtype=dtype)
    llm = model.model.llava.llm
    g = torch.Generator(device="cuda").manual_seed(5)
    prompts = [torch.randn(31 - 4 * i, llm.config.hidden_size, device="cuda", generator=g).to(dtype)
               for i in range(2)]
    results = {}
    modes = ("off", "on", "auto") if dtype == torch.bfloat16 else ("off", "on")  # auto tunes: once is enough
    for mode in modes:
        decoder = StaticDecoder(llm, [5], 2, 64, 10, compile_mode="off", gemv_mode=mode)
        decoder.capture((1, 2))
        assert decoder.captured_batches == (1, 2)
        with torch.inference_mode():
            results[mode] = (decoder.generate(prompts, 8, stop_at_mask=False), decoder._state(2).hidden.clone())
        if mode == "on":
            assert decoder.kernels.gemv and decoder.kernels.gemv_failure is None
        if mode != "off":  # every variant's captured step timed and probed: the same state on this GPU
            choice = decoder.gemv_choice
            assert all(0 < ms < float("inf") for ms in choice["step_ms"].values()), choice
            assert all(cos >= 0.999 for cos in choice["agreement"].values()), choice
            assert ("triton+pdl" in choice["step_ms"]) == (torch.cuda.get_device_capability()[0] >= 9)
            fastest = min(choice["step_ms"] if mode == "auto" else choice["agreement"], key=choice["step_ms"].get)
            assert choice["using"] == fastest and decoder.kernels.gemv == (fastest != "cublas")
    tol = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 0.1, "rtol": 0.05}
    for mode in modes[1:]:
        assert results[mode][0].generated == results["off"][0].generated
        torch.testing.assert_close(results[mode][1].float(), results["off"][1].float(), **tol)


@pytest.mark.parametrize(("mode", "pdl", "step_ms", "fails", "cosine", "using"), [
    ("auto", False, {"triton": 7.5, "cublas": 8.5}, (), {}, "triton"),
    ("auto", False, {"triton": 9.0, "cublas": 8.5}, (), {}, "cublas"),  # slower
    ("auto", False, {"triton": 7.5, "cublas": 8.5}, ("triton",), {}, "cublas"),  # fails to build in the warm-up
    ("auto", False, {"triton": 7.5, "cublas": 8.5}, (), {"triton": 0.5}, "cublas"),  # faster but wrong here
    ("on", False, {"triton": 9.0, "cublas": 8.5}, (), {}, "triton"),  # 'on' takes them even when slower...
    ("on", False, {"triton": 7.5, "cublas": 8.5}, (), {"triton": 0.5}, "cublas"),  # ...but never wrong ones
    ("auto", True, {"triton+pdl": 7.1, "triton": 7.5, "cublas": 8.5}, (), {}, "triton+pdl"),  # Hopper
    ("auto", True, {"triton+pdl": 7.1, "triton": 7.5, "cublas": 8.5}, ("triton+pdl",), {}, "triton"),
    ("auto", True, {"triton+pdl": 7.1, "triton": 7.5, "cublas": 8.5}, (), {"triton+pdl": 0.3}, "triton"),
])
def test_the_warm_up_uses_the_fastest_kernels_that_agree_with_cublas(
        llm, monkeypatch, caplog, mode, pdl, step_ms, fails, cosine, using) -> None:
    """The warm-up decision, with the captures, their timings and probe states stood in for (they need a GPU):
    every variant is captured, a failing or disagreeing one is never used."""
    decoder = StaticDecoder(llm, [5], 2, 64, 10, compile_mode="off", gemv_mode="auto")
    decoder.gemv_mode = mode
    decoder._gemv_possible = True  # as resolve_gemv says on a CUDA machine with Triton
    monkeypatch.setattr(decode_kernels, "pdl_supported", lambda device: pdl)
    captured = []

    def variant() -> str:
        k = decoder.kernels
        return "cublas" if not k.gemv else "triton+pdl" if k.pdl else "triton"

    def capture_step(batch):
        captured.append(variant())
        if variant() in fails:
            decoder.kernels._gemv_failed(RuntimeError("ptxas fatal"))
        return variant()

    def state(name):
        c = cosine.get(name, 1.0)
        return torch.tensor([[c, (1 - c**2) ** 0.5]])

    monkeypatch.setattr(decoder, "_capture_step", capture_step)
    monkeypatch.setattr(decoder, "_step_ms", lambda graph, batch: step_ms[graph])
    monkeypatch.setattr(decoder, "_probe_state", state)
    with caplog.at_level("WARNING"):
        decoder._prepare_gemv((1, 2))
    assert captured == list(step_ms)  # every variant's 1-row step captured, PDL first where the GPU has it
    assert decoder.gemv_choice["using"] == using == variant()
    for name in fails:
        assert decoder.gemv_choice["step_ms"][name] == float("inf") and name in decoder.kernels.gemv_failure
    assert decoder.gemv_choice["step_ms"]["cublas"] == step_ms["cublas"]
    assert ("disagree with cuBLAS" in caplog.text) == bool(cosine)
    decoder._prepare_gemv((1, 2))  # decided once per decoder
    assert len(captured) == len(step_ms)


def test_the_decoder_summary_says_which_kernels_decode(private_tiny_models) -> None:
    model = private_tiny_models["Gen"]
    model.set_decoder_gemv("auto")
    model.prepare()
    summary = model.decoder_summary()
    assert summary.startswith("eager steps; layer glue eager; CPU products"), summary  # a CPU: no graphs
    decoder = model.model.llava.decoder
    decoder.gemv_choice = {"step_ms": {"triton+pdl": 7.61, "triton": 7.91, "cublas": 8.49},
                           "agreement": {"triton+pdl": 0.99998, "triton": 0.99997}, "using": "triton+pdl"}
    decoder.kernels.gemv = decoder.kernels.pdl = True  # as a Hopper GPU's warm-up leaves it
    try:
        assert ("Triton kernels (programmatic dependent launch) (warm-up steps: triton+pdl 7.61 ms, triton 7.91 ms, "
                "cublas 8.49 ms; state cosine against cuBLAS: triton+pdl 1.0000, triton 1.0000)") in (
            model.decoder_summary())
    finally:
        decoder.gemv_choice, decoder.kernels.gemv, decoder.kernels.pdl = None, False, False
