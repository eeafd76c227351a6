"""Fused projection weights and the compiled layer glue of the static decoder (issue 9): the same numbers as the
HF modules, no second copy of the weights, layers that cannot be fused left alone, and a compile failure that
falls back to the eager glue instead of stopping the decoder. CPU, tiny fp32 model."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from ivlm_core.errors import InvalidInputError
from ivlm_core.model.decoding import StaticDecoder
from ivlm_core.model.fused_layers import FusedLayer, LayerKernels, resolve_compile


@pytest.fixture(scope="module")
def llm(private_tiny_models):
    return private_tiny_models["Gen"].model.llava.llm


def _prompts(llm) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    hidden = llm.config.hidden_size
    return [torch.randn(37, hidden, generator=g), torch.randn(29, hidden, generator=g)]


def _decode(decoder: StaticDecoder, prompts: list[torch.Tensor]):
    with torch.inference_mode():
        states = decoder.prefill(prompts)
        result = decoder.generate(prompts, 12, stop_at_mask=False)
    return states, result.generated


def test_fused_weights_are_views_and_decode_like_the_modules(llm) -> None:
    prompts = _prompts(llm)
    params = sum(p.nelement() for p in llm.parameters())
    ref_states, ref_ids = _decode(StaticDecoder(llm, [5], 2, 96, 16, compile_mode="off", fuse=False), prompts)
    fused = StaticDecoder(llm, [5], 2, 96, 16, compile_mode="off", fuse=True)
    assert all(f is not None for f in fused._fused)
    for layer, f in zip(llm.model.layers, fused._fused):
        attn, mlp = layer.self_attn, layer.mlp
        for m in (attn.q_proj, attn.k_proj, attn.v_proj):  # views of the fused tensor: no second copy
            assert m.weight.untyped_storage().data_ptr() == f.qkv.untyped_storage().data_ptr()
        for m in (mlp.gate_proj, mlp.up_proj):
            assert m.weight.untyped_storage().data_ptr() == f.gate_up.untyped_storage().data_ptr()
    assert sum(p.nelement() for p in llm.parameters()) == params
    again = StaticDecoder(llm, [5], 2, 96, 16, compile_mode="off", fuse=True)  # a rebuilt decoder: no second copy
    for f, g in zip(fused._fused, again._fused):
        assert g.qkv.data_ptr() == f.qkv.data_ptr() and g.gate_up.data_ptr() == f.gate_up.data_ptr()
        assert torch.equal(g.qkv, f.qkv) and torch.equal(g.gate_up, f.gate_up)
    states, ids = _decode(fused, prompts)
    assert ids == ref_ids
    torch.testing.assert_close(states, ref_states, atol=1e-5, rtol=1e-5)


def test_compiled_glue_traces_as_one_graph_and_decodes_the_same(llm) -> None:
    """fullgraph=True: a graph break anywhere in the glue fails here, not silently on the GPU."""
    prompts = _prompts(llm)
    ref_states, ref_ids = _decode(StaticDecoder(llm, [5], 2, 96, 16, compile_mode="off"), prompts)
    decoder = StaticDecoder(llm, [5], 2, 96, 16, compile_mode="off")
    decoder.kernels = LayerKernels(True, backend="aot_eager")  # dynamo + AOT autograd, no C++ compiler needed
    states, ids = _decode(decoder, prompts)
    assert decoder.kernels.compiled and decoder.kernels.failure is None
    assert ids == ref_ids
    torch.testing.assert_close(states, ref_states, atol=1e-5, rtol=1e-5)


def test_a_compile_failure_falls_back_to_the_eager_glue(llm, caplog) -> None:
    def broken_backend(graph_module, example_inputs):
        raise RuntimeError("no C++ compiler on this machine")

    prompts = _prompts(llm)
    ref_states, ref_ids = _decode(StaticDecoder(llm, [5], 2, 96, 16, compile_mode="off"), prompts)
    decoder = StaticDecoder(llm, [5], 2, 96, 16, compile_mode="off")
    decoder.kernels = LayerKernels(True, backend=broken_backend)
    with caplog.at_level("WARNING"):
        states, ids = _decode(decoder, prompts)
    assert not decoder.kernels.compiled and "no C++ compiler" in decoder.kernels.failure
    assert "runs eagerly" in caplog.text
    assert ids == ref_ids
    torch.testing.assert_close(states, ref_states, atol=1e-5, rtol=1e-5)


def test_layers_with_biases_are_left_to_the_modules() -> None:
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=4,
                         attention_bias=True, num_hidden_layers=1)
    layer = LlamaDecoderLayer(config, 0)
    before = layer.self_attn.q_proj.weight
    assert FusedLayer.from_module(layer) is None
    assert layer.self_attn.q_proj.weight is before


def test_compile_mode_is_resolved_per_device() -> None:
    assert resolve_compile("auto", torch.device("cpu")) is False  # CPU: the eager glue (no graph to amortise)
    assert resolve_compile("off", torch.device("cuda")) is False
    assert resolve_compile("on", torch.device("cpu")) is True
    with pytest.raises(InvalidInputError, match="auto"):
        resolve_compile("fast", torch.device("cpu"))


@pytest.mark.parametrize(("setting", "mode_of", "active"), [
    ("decoder_compile", lambda d: d.compile_mode, lambda d: d.kernels.compiled),
    ("decoder_gemv", lambda d: d.gemv_mode, lambda d: d.kernels.gemv),  # 'on' runs in Triton's interpreter here
], ids=["compile", "gemv"])
def test_decoder_kernel_choices_are_settings_of_the_model_and_the_pipeline(private_tiny_models, setting, mode_of,
                                                                           active) -> None:
    from ivlm_core.model import decode_kernels
    from ivlm_core.pipeline_config import PipelineConfig

    if setting == "decoder_gemv" and not decode_kernels.available(torch.device("cpu")):
        pytest.skip("the Triton kernels need Triton's interpreter on a CPU (TRITON_INTERPRET=1 and triton)")
    model = private_tiny_models["Gen"]
    llava = model.model.llava
    set_mode = getattr(model, f"set_{setting}")
    set_mode("off")
    model.prepare()
    first = llava.decoder
    assert mode_of(first) == "off" and not active(first)
    set_mode("off")
    assert llava.decoder is first  # same mode: kept
    set_mode("on")
    assert llava.decoder is not first and mode_of(llava.decoder) == "on" and active(llava.decoder)
    set_mode("auto")  # back to the default for the other tests of this module's models
    assert not active(llava.decoder)  # auto on a CPU: eager glue, the CPU's own matrix products
    with pytest.raises(InvalidInputError, match=setting.replace("_", " ") + " mode"):
        set_mode("max")
    with pytest.raises(InvalidInputError, match=setting):
        PipelineConfig(checkpoint_dir="x", **{setting: "fast"})
