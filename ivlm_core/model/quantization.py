"""Optional weight-only int8 / int4 for the LLM's decoder layers, through torchao.

The 13B LLM is ~26 GB in bf16; users of the reference run it on 16 GB cards with 4-bit weights. Weight-only
quantisation keeps activations in bf16 and stores the 40 decoder layers' Linear weights in int8
(per-channel) or int4 (groups of 128, torchao's tinygemm layout, CUDA only). CLIP, SAM, the projector,
`text_hidden_fcs`, the embeddings and the LM head stay in bf16: they are small, and the LM head's
32003 rows do not fit the int4 kernel's tiling.

torchao is optional and not in the requirements (`pip install torchao==0.18.0`): once installed, transformers
imports it in every process that loads a model (about 1 s, far more on a loaded CPU); bitsandbytes is not
used because its 4-bit kernels are slow for single-token decoding. Quantised weights change the
answer only through rounding: `bench.model_latency --quant` reports their agreement with bf16 on
random weights, which is not a measure of accuracy.
"""

from __future__ import annotations

import torch

from ivlm_core.errors import InvalidInputError
from ivlm_core.pipeline_config import QUANTIZATIONS

TORCHAO_PIN = "torchao==0.18.0"
INT4_GROUP_SIZE = 128


def torchao_available() -> bool:
    try:
        import torchao.quantization  # noqa: F401
    except Exception:  # ImportError, or a torchao built for another torch
        return False
    return True


def check_quantization(mode: str, device: torch.device | str) -> None:
    """Raise InvalidInputError saying what to change when `mode` cannot run here."""
    if mode not in QUANTIZATIONS:
        raise InvalidInputError(f"quantization must be one of {list(QUANTIZATIONS)}, got {mode!r}")
    if mode == "none":
        return
    if not torchao_available():
        raise InvalidInputError(
            f"quantization '{mode}' needs torchao, which is not importable here: `pip install {TORCHAO_PIN}` "
            "(or set quantization: none)"
        )
    if mode == "int4" and torch.device(device).type != "cuda":
        raise InvalidInputError(
            "quantization 'int4' needs a CUDA device (torchao's int4 kernel is CUDA-only); use int8 or none on CPU"
        )


def quantize_llm(llm, mode: str) -> int:
    """Quantise the decoder layers' Linear weights of a LlamaForCausalLM in place; returns how many.

    Call before `prepare()`/warm-up: the static decoder and its CUDA graphs use the modules as they are.
    """
    device = llm.lm_head.weight.device
    check_quantization(mode, device)
    if mode == "none":
        return 0
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    if mode == "int8":
        config = Int8WeightOnlyConfig()
    else:
        if llm.lm_head.weight.dtype != torch.bfloat16:
            raise InvalidInputError("quantization 'int4' needs the model in bfloat16 (dtype: bfloat16 or auto)")
        config = Int4WeightOnlyConfig(group_size=INT4_GROUP_SIZE, int4_packing_format="tile_packed_to_4d")
    count = 0
    for layer in llm.model.layers:
        quantize_(layer, config)
        count += sum(1 for m in layer.modules() if isinstance(m, torch.nn.Linear))
    return count


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's parameters as stored (quantised tensors count their packed data and scales):
    what one decode step has to read, i.e. the numerator of the bandwidth floor."""
    return sum(_nbytes(p) for p in module.parameters())


def _nbytes(t: torch.Tensor) -> int:
    if type(t) not in (torch.Tensor, torch.nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(_nbytes(getattr(t, n)) for n in names)
    return t.nelement() * t.element_size()
