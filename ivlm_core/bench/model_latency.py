"""Latency of the human-contact task: KV-cached fast path vs the reference-style naive path, one run.

    python -m ivlm_core.bench.model_latency            # real 13B-size architecture, random bf16, on a GPU
    python -m ivlm_core.bench.model_latency --tiny     # tiny model on CPU, seconds

Random weights cannot answer, so the LM head is wired (as in the test fixtures) to produce an answer of
`--answer-tokens` tokens ending in [SEG] (then EOS; decoding stops at [SEG], as the product does): both paths
then run everything a real frame runs (CLIP, LLM prefill + decode, [SEG] state, camera tokens, SAM decode,
post-processing, lifting). The 13B model is
built on the meta device and materialised directly on the GPU: no 13B host allocation.
Last line: ``frame_s=<float> naive_frame_s=<float> speedup=<float> peak_gb=<float>``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np
import torch

from ivlm_core.model.prompts import (
    HCONTACT_PARTS_QUESTIONS,
    PromptTokenizer,
)

LLAMA2_13B = {
    "hidden_size": 5120,
    "intermediate_size": 13824,
    "num_hidden_layers": 40,
    "num_attention_heads": 40,
    "num_key_value_heads": 40,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "vocab_size": 32003,
    "mm_hidden_size": 1024,
    "out_dim": 256,
    "seg_token_idx": 32000,
}
TINY_LLM = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "vocab_size": 803,
    "mm_hidden_size": 32,
    "out_dim": 32,
    "seg_token_idx": 800,
}
CLIP_VIT_L14 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
}
TINY_CLIP = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "image_size": 56,
    "patch_size": 14,
}


def train_prompt_tokenizer(sp_vocab: int, seg_id: int) -> PromptTokenizer:
    """A small SentencePiece model over the prompt templates; real prompts are similar in length."""
    import sentencepiece as spm

    from ivlm_core.testing.tiny_checkpoint import train_sentencepiece

    sp = spm.SentencePieceProcessor(model_proto=train_sentencepiece(sp_vocab))
    return PromptTokenizer(sp, {"[SEG]": seg_id, "<im_start>": seg_id + 1, "<im_end>": seg_id + 2})


def build_random_model(tiny: bool, device: torch.device, dtype: torch.dtype):
    """InteractVLM of the released architecture (or tiny) with random weights, built on `device`."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    from ivlm_core.model.checkpoint import InteractVLMConfig, TokenIds, build_model
    from ivlm_core.model.predictor import InteractVLMPredictor
    from ivlm_core.model.processing import InteractVLMProcessor
    from ivlm_core.model.sam import SamSpec

    llm = dict(TINY_LLM if tiny else LLAMA2_13B)
    clip = TINY_CLIP if tiny else CLIP_VIT_L14
    seg = llm["seg_token_idx"]
    raw = {**llm, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "tie_word_embeddings": False}
    config = InteractVLMConfig(
        raw=raw,
        token_type="Gen",
        seg_token_idx=seg,
        hseg_token_idx=None,
        oseg_token_idx=None,
        out_dim=llm["out_dim"],
        mm_hidden_size=llm["mm_hidden_size"],
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_use_im_start_end=True,
        multiview_channels=4,
        multiview_cam_cond=True,
        cam_encoder_type="vi_v1",
        hC_sam_view_type="4MV-Z_Vitru",
        oC_sam_view_type=None,
        hC_question_type="parts",
        oC_question_type="afford",
        eos_token_id=2,
        bos_token_id=1,
    )
    clip_cfg = CLIPVisionConfig(**clip, projection_dim=clip["hidden_size"], hidden_act="quick_gelu")
    clip_cfg._attn_implementation = "sdpa"
    with torch.device(device):
        tower = CLIPVisionModel(clip_cfg)  # normal init: its position_ids buffer is not a weight
    size = clip["image_size"]
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    tokenizer = train_prompt_tokenizer(600 if tiny else 800, seg)
    ids = TokenIds(seg=seg, hseg=None, oseg=None, im_start=seg + 1, im_end=seg + 2, bos=1, eos=2)
    spec = SamSpec.tiny() if tiny else SamSpec.vit_h()
    model = build_model(config, spec, tower.to(dtype), device, dtype)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name or "layer_norm" in name:
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=generator)
        for name, b in model.named_buffers():  # persistent buffers (SAM's Fourier matrix) need values too
            if name.endswith("positional_embedding"):
                b.normal_(0.0, 1.0, generator=generator)
    model.requires_grad_(False)
    return InteractVLMPredictor(model.eval(), InteractVLMProcessor(config, tokenizer, ids, processor, spec))


def wire_answer(model, num_tokens: int, embed_norm: float, strength: float) -> list[int]:
    """Make greedy decoding emit `num_tokens` tokens whose last is [SEG], then EOS (bigram chain).

    Each chain token's embedding is made long enough to dominate the residual stream (a random 13B adds
    O(1e3) over 40 layers), and the next token's LM-head row points along it.
    """
    rng = np.random.default_rng(0)
    ids = model.processor.prompt_ids(HCONTACT_PARTS_QUESTIONS[0].format(class_name="tennis_racket"))
    prompt_vocab = set(ids)
    sp_size = model.processor.prompt_tokenizer.sp_model.get_piece_size()
    pool = [int(i) for i in rng.permutation(np.arange(3, sp_size)) if int(i) not in prompt_vocab]
    answer = [*pool[: num_tokens - 1], model.token_ids.seg]
    chain = [ids[-1], *answer, model.token_ids.eos]
    emb = model.model.llava.llm.get_input_embeddings().weight
    head = model.model.llava.llm.lm_head.weight
    with torch.no_grad():
        for prev, nxt in itertools.pairwise(chain):
            row = emb[prev].float()
            emb[prev] = (row * (embed_norm / row.norm())).to(emb.dtype)
            head[nxt] += (strength * row / row.norm()).to(head.dtype)
    return answer


def synthetic_human_assets(resolution: int):
    """Renders + lifting maps of an icosphere in the 4 human views (stand-in for the Vitruvian body)."""
    import trimesh

    from ivlm_core.geometry.lifting import LiftingMaps
    from ivlm_core.geometry.shading import render_views
    from ivlm_core.geometry.views import get_view_set
    from ivlm_core.model.processing import HumanRenderAssets

    mesh = trimesh.creation.icosphere(subdivisions=4, radius=0.6)
    views = get_view_set("4MV-Z_Vitru")
    images, frags = render_views(np.asarray(mesh.vertices), np.asarray(mesh.faces), views, resolution, "normals")
    return HumanRenderAssets(
        tuple(v.name for v in views), images, LiftingMaps.from_fragments(frags, len(mesh.vertices))
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_frame(model, image: np.ndarray, naive: bool, device: torch.device) -> tuple[float, dict]:
    _sync(device)
    t0 = time.perf_counter()
    result = model.predict_human_contact(image, "tennis_racket", template="parts", naive=naive)
    _sync(device)
    if not result.found:
        raise RuntimeError("the wired answer did not produce [SEG]; the benchmark is invalid")
    return time.perf_counter() - t0, result.timings | {"tokens": len(result.language.generated_ids)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (seconds), for CI")
    parser.add_argument("--answer-tokens", type=int, default=30, help="answer tokens incl. the final [SEG]")
    parser.add_argument("--repeats", type=int, default=5, help="timed fast-path frames")
    parser.add_argument("--naive-repeats", type=int, default=1, help="timed naive-path frames")
    parser.add_argument("--device", default=None, help="default: cpu with --tiny, else cuda")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("The 13B benchmark needs a CUDA GPU; use --tiny for the CPU version.")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_random_model(args.tiny, device, dtype)
    resolution = 64 if args.tiny else 1024
    model.set_human_assets(synthetic_human_assets(resolution))
    wire_answer(model, args.answer_tokens, embed_norm=30.0 if args.tiny else 1e5, strength=40.0 if args.tiny else 4.0)
    print(
        f"device={device} dtype={dtype} tiny={args.tiny} build_s={time.perf_counter() - t0:.1f} "
        f"params={sum(p.numel() for p in model.model.parameters()) / 1e9:.3f}B"
    )
    image = (np.random.default_rng(1).random((480, 640, 3)) * 255).astype(np.uint8)

    run_frame(model, image, naive=False, device=device)  # warm-up (kernels, SAM embedding cache)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fast = [run_frame(model, image, naive=False, device=device) for _ in range(args.repeats)]
    naive = [run_frame(model, image, naive=True, device=device) for _ in range(args.naive_repeats)]
    peak_gb = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")

    def report(label: str, runs: list[tuple[float, dict]]) -> float:
        frame = statistics.median(r[0] for r in runs)
        timing = runs[len(runs) // 2][1]
        tokens = int(timing["tokens"])
        per_token = timing["decode_s"] / max(tokens - 1, 1)
        print(
            f"{label}: tokens={tokens} ttft_s={timing['prefill_s']:.4f} decode_per_token_s={per_token:.4f} "
            f"sam_s={timing['sam_s']:.4f} lift_s={timing['lift_s']:.4f} frame_s={frame:.4f}"
        )
        return frame

    frame_s = report("fast (kv cache)", fast)
    naive_s = report("naive (no cache)", naive)
    print(f"frame_s={frame_s:.4f} naive_frame_s={naive_s:.4f} speedup={naive_s / frame_s:.2f} peak_gb={peak_gb:.2f}")


if __name__ == "__main__":
    main()
