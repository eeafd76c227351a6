"""Per-frame latency of InteractVLM against the weight-bandwidth floor of decoding, one run.

    python -m ivlm_core.bench.model_latency                  # 13B-size architecture, random bf16, on a GPU
    python -m ivlm_core.bench.model_latency --quant int4     # same with int4 LLM weights (torchao)
    python -m ivlm_core.bench.model_latency --tiny           # tiny model on CPU, seconds

Random weights cannot answer, so the LM head is wired (as in the test fixtures) to produce an answer of
`--answer-tokens` tokens ending in [SEG] (then EOS; decoding stops at [SEG], as the product does): every
path then runs everything a real frame runs (CLIP, LLM prefill + decode, mask-token state, camera tokens,
SAM decode, post-processing, lifting). The 13B model is built on the meta device and its random weights are
drawn directly on the GPU: no 13B host allocation.

Figures: `frame_s` one human-contact frame (static decoder, CUDA graphs on a GPU), `interaction_frame_s`
human + object contact in one pass (batch of 2), `prefill_ms` CLIP + prompt forward, `decode_ms_per_token`
decode time / answer tokens, `floor_ms_per_token` = bytes of the weights one decode step reads / the
GPU's memory bandwidth (table below or `--bandwidth-gbs`), `peak_gb` peak allocated memory while serving
frames (after load; `build_peak_gb` on the detail line includes loading), `naive_frame_s` the reference's
no-cache decoder. The run asserts that the static decoder agrees with the eager DynamicCache decoder.
Last line: ``frame_s=<f> interaction_frame_s=<f> prefill_ms=<f> decode_ms_per_token=<f> floor_ms_per_token=<f>
peak_gb=<f> naive_frame_s=<f>``.

`--draft` (issue 13) then measures draft-and-verify decoding from the answer templates. Answers are drawn
as the reference builds its training answers (random `parts` template, random set of 1-6 body parts in
segmentation order, ', '-joined; stand-in SMPL part names unless `--segmentation` names the user's
smpl_segmentation_merged.pkl). `forwards_per_answer` / `accepted_per_forward` are the verify forwards per
answer and the draft tokens each accepts when the model's greedy answer is the drawn one (the decoder stops
at the mask token; the first token comes from the prefill). Then the model is re-wired to one drawn answer
(one a bigram chain can reproduce: no token repeated with another successor) and frames are timed with
drafting (`frame_s`) and without (`plain_frame_s`); the run asserts that both give the same answer (and, in
fp32, the same masks and contacts). `rejected_draft_overhead` is the decode time with every draft rejected
(K wrong tokens per forward) over plain decode time, minus 1. Last line with `--draft`:
``forwards_per_answer=<f> accepted_per_forward=<f> frame_s=<f> plain_frame_s=<f>``.
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
from ivlm_core.pipeline_config import DECODER_GEMV, QUANTIZATIONS

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
    wire_chain(model, [ids[-1], *answer, model.token_ids.eos], embed_norm, strength)
    return answer


def wire_chain(model, chain: list[int], embed_norm: float, strength: float) -> None:
    """Greedy decoding at token chain[i] emits chain[i+1] (each token must have one successor)."""
    emb = model.model.llava.llm.get_input_embeddings().weight
    head = model.model.llava.llm.lm_head.weight
    with torch.no_grad():
        for prev, nxt in itertools.pairwise(chain):
            row = emb[prev].float()
            emb[prev] = (row * (embed_norm / row.norm())).to(emb.dtype)
            head[nxt] += (strength * row / row.norm()).to(head.dtype)


STAND_IN_PARTS = (
    "head", "neck", "leftShoulder", "rightShoulder", "leftArm", "rightArm", "leftForeArm", "rightForeArm",
    "leftHand", "rightHand", "spine", "hips", "leftUpLeg", "rightUpLeg", "leftLeg", "rightLeg", "leftFoot",
    "rightFoot",
)  # fmt: skip
"""SMPL-style part names standing in for the keys of the user's smpl_segmentation_merged.pkl (not shipped)."""


def draw_answers(rng: np.random.Generator, count: int, parts: tuple[str, ...], token: str = "[SEG]") -> list[str]:
    """`parts` answers as the reference builds its training answers: a random template and a random set of
    1-6 body parts in segmentation order, joined by ', '."""
    from ivlm_core.model.prompts import HCONTACT_PARTS_ANSWERS

    answers = []
    for _ in range(count):
        template = HCONTACT_PARTS_ANSWERS[int(rng.integers(len(HCONTACT_PARTS_ANSWERS)))]
        chosen = sorted(rng.choice(len(parts), size=int(rng.integers(1, min(6, len(parts)) + 1)), replace=False))
        answers.append(template.format(body_parts=", ".join(parts[i] for i in chosen), TOKEN=token))
    return answers


class _RejectedDrafts:
    """A drafter whose every proposal is wrong on the wired answer (token 0 never wins): the all-rejected cost."""

    def propose(self, answer, k: int, prompt=()) -> list[int]:
        return [0] * k


def run_drafting(model, image: np.ndarray, args, device: torch.device, saved: tuple[torch.Tensor, torch.Tensor],
                 ) -> str:
    """The --draft measurements (see the module docstring); returns the last line."""
    from ivlm_core.model.drafting import load_body_part_names

    tok = model.processor.prompt_tokenizer
    seg, eos = model.token_ids.seg, model.token_ids.eos
    parts = load_body_part_names(args.segmentation) if args.segmentation else STAND_IN_PARTS
    model.set_drafting(True, args.draft_tokens, parts)
    drafter = model.model.llava.drafter
    prompt = model.processor.prompt_ids(HCONTACT_PARTS_QUESTIONS[0].format(class_name="tennis_racket"))
    rng = np.random.default_rng(7)
    drawn = []
    for text in draw_answers(rng, args.draft_answers, parts):
        ids = tok.encode(text, add_bos=False)
        drawn.append(ids[: ids.index(seg) + 1])  # decoding stops at the mask token
    replays = [drafter.replay(ids, args.draft_tokens, prompt) for ids in drawn]
    forwards = statistics.fmean(f for f, _ in replays)
    accepted = sum(a for _, a in replays) / max(sum(f for f, _ in replays), 1)
    lengths = [len(ids) for ids in drawn]
    near30 = [f for (f, _), n in zip(replays, lengths) if 25 <= n <= 35]
    print(
        f"draft: K={args.draft_tokens} answers={len(drawn)} parts={'file' if args.segmentation else 'stand-in'} "
        f"tokens_per_answer mean={statistics.fmean(lengths):.1f} min={min(lengths)} max={max(lengths)}; "
        f"forwards_per_answer mean={forwards:.2f} worst={max(f for f, _ in replays)}; "
        f"25-35-token answers: n={len(near30)} forwards mean={statistics.fmean(near30) if near30 else float('nan'):.2f}"
    )

    # re-wire the model to one drawn answer a bigram chain reproduces, and time real frames on it
    emb = model.model.llava.llm.get_input_embeddings().weight
    head = model.model.llava.llm.lm_head.weight
    with torch.no_grad():
        emb.copy_(saved[0])
        head.copy_(saved[1])
    for text in draw_answers(rng, 1000, parts):
        ids = tok.encode(text, add_bos=False)
        chain = [prompt[-1], *ids[: ids.index(seg) + 1], eos]
        if len(set(chain[:-1])) == len(chain) - 1:
            break
    else:
        raise RuntimeError("no drawn answer is a bigram chain; cannot wire the model")
    norm, strength = (30.0, 40.0) if args.tiny else (1e5, 4.0)
    wire_chain(model, chain, norm, strength)
    model.set_drafting(False)
    plain = [run_frame(model, image, naive=False, device=device) for _ in range(args.repeats + 1)][1:]
    model.set_drafting(True, args.draft_tokens, parts)
    drafted = [run_frame(model, image, naive=False, device=device) for _ in range(args.repeats + 1)][1:]
    model.model.llava.drafter = _RejectedDrafts()
    rejected = [run_frame(model, image, naive=False, device=device) for _ in range(args.repeats + 1)][1:]
    model.set_drafting(False)
    ref, got = plain[0][1], drafted[0][1]
    if got.language.generated_ids != ref.language.generated_ids or ref.language.generated_ids != chain[1:-1]:
        raise AssertionError("drafted decoding did not give the plain greedy answer (or the wiring failed)")
    if rejected[0][1].language.generated_ids != ref.language.generated_ids:
        raise AssertionError("decoding with every draft rejected did not give the plain greedy answer")
    if model.dtype == torch.float32:
        np.testing.assert_allclose(got.view_logits, ref.view_logits, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(got.contacts_smplh, ref.contacts_smplh, atol=1e-5)
    decode = {name: statistics.median(r[1].timings["decode_s"] for r in runs)
              for name, runs in (("plain", plain), ("drafted", drafted), ("rejected", rejected))}
    frame_s = statistics.median(r[0] for r in drafted)
    plain_s = statistics.median(r[0] for r in plain)
    print(f"drafted == plain greedy: ok ({'ids, masks, contacts' if model.dtype == torch.float32 else 'ids'}); "
          f"wired answer tokens={len(chain) - 2}: \"{tok.decode(chain[1:-1])}\"")
    def spread(runs) -> str:
        values = [r[0] for r in runs]
        return f"mean={statistics.fmean(values):.4f} worst={max(values):.4f}"

    print(
        f"draft frames: drafted {spread(drafted)} plain {spread(plain)}; decode_s drafted={decode['drafted']:.4f} "
        f"plain={decode['plain']:.4f} all-rejected={decode['rejected']:.4f} "
        f"rejected_draft_overhead={decode['rejected'] / decode['plain'] - 1:.3f} "
        f"decode_forwards drafted={drafted[0][1].timings['decode_forwards']:.0f} "
        f"plain={plain[0][1].timings['decode_forwards']:.0f}"
    )
    return (f"forwards_per_answer={forwards:.3f} accepted_per_forward={accepted:.3f} frame_s={frame_s:.4f} "
            f"plain_frame_s={plain_s:.4f}")


def synthetic_lifting(views: int, resolution: int, num_vertices: int, seed: int, coverage: float = 0.35):
    """Random renders and pixel->vertex maps of the real sizes (SAM and lifting cost what they cost on real
    renders; no rasterizer, so no numba/trimesh needed on a bare GPU machine)."""
    from ivlm_core.geometry.lifting import LiftingMaps

    rng = np.random.default_rng(seed)
    renders = rng.integers(0, 256, (views, resolution, resolution, 3), dtype=np.uint8)
    ids = rng.integers(0, num_vertices, (views, resolution, resolution, 3))
    ids[rng.random((views, resolution, resolution)) > coverage] = -1
    bary = rng.random((views, resolution, resolution, 3), dtype=np.float32)
    bary /= bary.sum(axis=-1, keepdims=True)
    return renders, LiftingMaps.from_arrays(list(ids), list(bary), num_vertices)


def synthetic_human_assets(resolution: int):
    """4 human views on an SMPL-H-sized (6890 vertices) body."""
    from ivlm_core.geometry.views import get_view_set
    from ivlm_core.model.processing import SMPLH_NUM_VERTICES, HumanRenderAssets

    renders, maps = synthetic_lifting(4, resolution, SMPLH_NUM_VERTICES, seed=2)
    return HumanRenderAssets(tuple(v.name for v in get_view_set("4MV-Z_Vitru")), renders, maps)


def synthetic_object(model, resolution: int, num_vertices: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """A random mesh whose object-view renders and maps are given to the model (no rendering)."""
    rng = np.random.default_rng(3)
    vertices = rng.normal(size=(num_vertices, 3))
    faces = rng.integers(0, num_vertices, (2 * num_vertices, 3))
    renders, maps = synthetic_lifting(4, resolution, num_vertices, seed=4)
    model.set_object_renders(vertices, faces, renders, maps)
    return vertices, faces


MEMORY_BANDWIDTH_GBS = (
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # SXM (HBM3)
    ("GH200", 4000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),  # 40 GB parts
    ("L40S", 864.0),
    ("L40", 864.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("L4", 300.0),
    ("RTX 4090", 1008.0),
    ("RTX 3090", 936.0),
    ("V100", 900.0),
    ("T4", 320.0),
)
"""Peak memory bandwidth (GB/s) by device-name substring, most specific first (vendor data sheets)."""


def memory_bandwidth_gbs(device: torch.device, override: float | None) -> float:
    """`override`, else the table entry for this GPU's name; NaN when unknown (CPU, unlisted GPU)."""
    if override is not None:
        return float(override)
    if device.type != "cuda":
        return float("nan")
    name = torch.cuda.get_device_name(device)
    return next((bw for key, bw in MEMORY_BANDWIDTH_GBS if key in name), float("nan"))


def decode_weight_bytes(model) -> int:
    """Bytes one decode step reads: every LLM weight except the embedding table (one row of it is read)."""
    from ivlm_core.model.quantization import weight_bytes

    llm = model.model.llava.llm
    return weight_bytes(llm) - weight_bytes(llm.model.embed_tokens)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_frame(model, image: np.ndarray, naive: bool, device: torch.device) -> tuple[float, object]:
    _sync(device)
    t0 = time.perf_counter()
    result = model.predict_human_contact(image, "tennis_racket", template="parts", naive=naive)
    _sync(device)
    if not result.found:
        raise RuntimeError("the wired answer did not produce [SEG]; the benchmark is invalid")
    return time.perf_counter() - t0, result


def run_interaction(model, image: np.ndarray, mesh, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    human, obj = model.predict_interaction(image, "tennis_racket", *mesh, human_template="parts")
    _sync(device)
    if not (human.found and obj.found):
        raise RuntimeError("the wired answer did not produce [SEG] in both rows; the benchmark is invalid")
    return time.perf_counter() - t0


def check_static_equals_eager(model, image: np.ndarray, static, device: torch.device) -> str:
    """The run's own equivalence check: the eager DynamicCache decoder gives the same answer (up to the
    mask token) and, in fp32, the same masks. Raises in fp32; in bf16 (GPU) a near-tie may flip a token,
    so it reports instead of losing the run's figures."""
    model.decoding = "eager"
    try:
        _, eager = run_frame(model, image, naive=False, device=device)
    finally:
        model.decoding = "static"
    n = len(static.language.generated_ids)
    same = static.language.generated_ids == eager.language.generated_ids[:n]
    if model.dtype == torch.float32:
        if not same:
            raise AssertionError("static and eager decoders disagree on the answer ids")
        np.testing.assert_allclose(static.view_logits, eager.view_logits, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(static.contacts_smplh, eager.contacts_smplh, atol=1e-5)
        return "static == eager decoder: ok"
    if not same:
        return "static == eager decoder: MISMATCH in the answer ids (bf16)"
    diff = float(np.abs(static.view_logits - eager.view_logits).max())
    return f"static == eager decoder: ok (same ids; bf16 max mask-logit difference {diff:.3g})"


def mask_state(model, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask-token state (1, H) and the prompt's final states (L-1, H) of the bench question, fp32 on CPU.

    The wired answer's states are dominated by the long wired embeddings, so they agree almost trivially;
    the prompt positions (image + question, nothing wired but the last token) show the quantisation error.
    """
    question = HCONTACT_PARTS_QUESTIONS[0].format(class_name="tennis_racket")
    _, out = model.run_language(image, question)
    if out.seg_hidden is None:
        raise RuntimeError("the wired answer did not produce [SEG]; the benchmark is invalid")
    llava = model.model.llava
    with torch.inference_mode():
        pixels = model.processor.preprocess_image(image)
        prompt = llava.final_hidden(llava.embed(out.prompt_ids, llava.image_features(pixels)))[0, :-1]
    return out.seg_hidden.float().cpu(), prompt.float().cpu()


def agreement(reference, result, ref_states, states) -> str:
    """How close a quantised run's outputs are to the unquantised run's (random weights: not accuracy)."""
    cos = float(torch.nn.functional.cosine_similarity(ref_states[0], states[0]).item())
    prompt_cos = torch.nn.functional.cosine_similarity(ref_states[1], states[1], dim=-1)
    rel = float((states[1] - ref_states[1]).norm() / ref_states[1].norm())
    ref_mask, mask = reference.view_logits > 0, result.view_logits > 0
    union = np.logical_or(ref_mask, mask).sum()
    iou = float(np.logical_and(ref_mask, mask).sum() / union) if union else 1.0
    ref_c, c = reference.contacts_smplh > 0.5, result.contacts_smplh > 0.5
    same_ids = reference.language.generated_ids == result.language.generated_ids
    return (
        f"mask_state_cos={cos:.6f} prompt_state_cos_mean={float(prompt_cos.mean()):.5f} "
        f"prompt_state_cos_min={float(prompt_cos.min()):.5f} prompt_state_rel_err={rel:.3e} mask_iou={iou:.4f} "
        f"contact_agree={float((ref_c == c).mean()):.4f} same_answer={same_ids}"
    )


def gemv_note(decoder) -> str:
    """Which kernels run the decode step's products, and the warm-up's captured 1-row steps that chose them."""
    kernels = decoder.kernels
    using = "triton+pdl" if kernels.gemv and kernels.pdl else "triton" if kernels.gemv else "torch"
    note = f"gemv={using} (mode {decoder.gemv_mode}"
    if decoder.gemv_choice is not None:
        choice = decoder.gemv_choice
        note += "; step_ms " + " ".join(f"{name}={ms:.3f}" for name, ms in choice["step_ms"].items())
        note += "; state_cos " + " ".join(f"{name}={cos:.5f}" for name, cos in choice["agreement"].items())
    if kernels.gemv_failure is not None:
        note += f"; failed: {kernels.gemv_failure[:200]}"
    if kernels.tuner.configs:
        tuned = ", ".join(f"{c.n}x{c.k}{'+norm' * c.norm}{'+silu' * c.gated}{'+res' * c.residual}:"
                          f"{v.block_n}/{v.block_k}/{v.num_warps}w{v.num_stages}s"
                          for c, v in kernels.tuner.configs.items())
        note += f"; tuned {tuned}"
    return note + ")"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (seconds), for CI")
    parser.add_argument("--answer-tokens", type=int, default=30, help="answer tokens incl. the final [SEG]")
    parser.add_argument("--repeats", type=int, default=5, help="timed fast-path frames")
    parser.add_argument("--naive-repeats", type=int, default=1, help="timed naive-path frames (0: skip, nan)")
    parser.add_argument("--device", default=None, help="default: cpu with --tiny, else cuda")
    parser.add_argument("--quant", choices=QUANTIZATIONS, default="none", help="LLM weights (torchao)")
    parser.add_argument("--bandwidth-gbs", type=float, default=None, help="memory bandwidth for the floor")
    parser.add_argument("--draft", action="store_true", help="also measure draft-and-verify decoding (issue 13)")
    parser.add_argument("--draft-tokens", type=int, default=8, help="K: draft tokens verified per forward")
    parser.add_argument("--draft-answers", type=int, default=200, help="drawn answers for forwards_per_answer")
    parser.add_argument("--segmentation", default=None, help="smpl_segmentation_merged.pkl for the part names")
    parser.add_argument("--decoder-gemv", choices=DECODER_GEMV, default="auto",
                        help="Triton decode kernels (auto: on CUDA, if their step agrees with cuBLAS's and is faster)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    if args.draft and not 1 <= args.draft_tokens <= 32:
        raise SystemExit("--draft-tokens must be in [1, 32]")

    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("The 13B benchmark needs a CUDA GPU; use --tiny for the CPU version.")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_random_model(args.tiny, device, dtype)
    resolution = 64 if args.tiny else 1024
    model.object_render_size = resolution
    model.set_human_assets(synthetic_human_assets(resolution))
    llm = model.model.llava.llm
    saved = None
    if args.draft:  # the draft run re-wires the model to a template answer later
        saved = llm.get_input_embeddings().weight.detach().clone(), llm.lm_head.weight.detach().clone()
    wire_answer(model, args.answer_tokens, embed_norm=30.0 if args.tiny else 1e5, strength=40.0 if args.tiny else 4.0)
    image = (np.random.default_rng(1).random((480, 640, 3)) * 255).astype(np.uint8)
    mesh = synthetic_object(model, resolution)
    reference = ref_state = None
    if args.quant != "none":
        from ivlm_core.model.quantization import quantize_llm

        model.prepare(warm_up=False)
        _, reference = run_frame(model, image, naive=False, device=device)  # unquantised, for the agreement
        ref_state = mask_state(model, image)
        model.model.llava.decoder = None
        quantize_llm(model.model.llava.llm, args.quant)
    build_s = time.perf_counter() - t0
    model.set_decoder_gemv(args.decoder_gemv)
    model.prepare()  # what the pipeline does at load: SAM/camera constants, decoder + CUDA graphs
    prepare_s = time.perf_counter() - t0 - build_s
    print(
        f"device={device} name={torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'} "
        f"dtype={dtype} quant={args.quant} tiny={args.tiny} build_s={build_s:.1f} prepare_s={prepare_s:.1f} "
        f"params={sum(p.numel() for p in model.model.parameters()) / 1e9:.3f}B "
        f"graphs={model.model.llava.decoder.captured_batches} torch={torch.__version__}"
    )

    run_frame(model, image, naive=False, device=device)  # first frame (nothing left to warm, but be fair)
    run_interaction(model, image, mesh, device)
    build_peak_gb = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fast = [run_frame(model, image, naive=False, device=device) for _ in range(args.repeats)]
    inter = [run_interaction(model, image, mesh, device) for _ in range(args.repeats)]
    naive = [run_frame(model, image, naive=True, device=device) for _ in range(args.naive_repeats)]
    peak_gb = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    print(check_static_equals_eager(model, image, fast[0][1], device))
    if reference is not None:
        base = str(dtype).replace("torch.", "")
        agree = agreement(reference, fast[0][1], ref_state, mask_state(model, image))
        print(f"{args.quant} vs {base} on random weights (agreement, not accuracy): {agree}")

    def stats(values: list[float]) -> str:
        return f"mean={statistics.fmean(values):.4f} worst={max(values):.4f}"

    timing = fast[len(fast) // 2][1].timings
    tokens = len(fast[0][1].language.generated_ids)
    decode_ms = 1e3 * statistics.median(r[1].timings["decode_s"] for r in fast) / tokens
    prefill_ms = 1e3 * statistics.median(r[1].timings["prefill_s"] for r in fast)
    weights = decode_weight_bytes(model)
    bandwidth = memory_bandwidth_gbs(device, args.bandwidth_gbs)
    floor_ms = 1e3 * weights / (bandwidth * 1e9) if bandwidth == bandwidth else float("nan")
    frame_s = statistics.median(r[0] for r in fast)
    inter_s = statistics.median(inter)
    naive_s = statistics.median(r[0] for r in naive) if naive else float("nan")
    naive_note = "skipped"
    if naive:
        naive_note = f"{stats([r[0] for r in naive])} tokens={len(naive[0][1].language.generated_ids)}"
    print(
        f"fast frame: {stats([r[0] for r in fast])} tokens={tokens} sam_s={timing['sam_s']:.4f} "
        f"lift_s={timing['lift_s']:.4f}; interaction: {stats(inter)}; naive: {naive_note}"
    )
    print(
        f"decode weights={weights / 1e9:.2f}GB bandwidth_gbs={bandwidth:.0f} "
        f"decode/floor={decode_ms / floor_ms:.2f} build_peak_gb={build_peak_gb:.2f} "
        f"{gemv_note(model.model.llava.decoder)}"
    )
    print(
        f"frame_s={frame_s:.4f} interaction_frame_s={inter_s:.4f} prefill_ms={prefill_ms:.2f} "
        f"decode_ms_per_token={decode_ms:.3f} floor_ms_per_token={floor_ms:.3f} peak_gb={peak_gb:.2f} "
        f"naive_frame_s={naive_s:.4f}"
    )
    if args.draft:
        print(run_drafting(model, image, args, device, saved))


if __name__ == "__main__":
    main()
