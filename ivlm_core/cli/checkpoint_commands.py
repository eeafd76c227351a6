"""`ivlm info` and `ivlm convert`: what a checkpoint holds (read from config and weight headers, no model
built) and its one-time conversion from pickled `.bin` shards to safetensors (with a progress bar)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ivlm_core.errors import IvlmError


# ------------------------------------------------------------------------------------------------ info
def _group(key: str) -> str:
    if key.startswith("model.visual_model.image_encoder."):
        return "sam_image_encoder"
    if key.startswith("model.visual_model.prompt_encoder."):
        return "sam_prompt_encoder"
    if key.startswith("model.visual_model.mask_decoder."):
        return "sam_mask_decoder"
    for prefix, name in (
        ("model.mm_projector.", "projector"),
        ("model.text_hidden_fcs.", "text_hidden_fcs"),
        ("cam_pose_encoder.", "camera_encoder"),
        ("attention_splitter.", "attention_splitter"),
        ("model.vision_tower.", "vision_tower"),
    ):
        if key.startswith(prefix):
            return name
    if key.endswith("rotary_emb.inv_freq"):
        return "ignored_rotary_buffers"
    return "llm"


def checkpoint_info(
    model_dir: str | Path, clip_dir: str | Path | None = None, dtype: str = "bfloat16", **inputs: object
) -> dict:
    """Sizes, dtypes and a memory estimate read from config + weight headers (no model is built), and what
    the checkpoint will be fed (`ivlm_core.model.processing.describe_inputs`; `inputs` are its arguments)."""
    import torch

    from ivlm_core.model.checkpoint import find_weight_files, read_config, resolve_clip_dir, tensor_shapes
    from ivlm_core.model.processing import describe_inputs

    config = read_config(model_dir)
    files = find_weight_files(model_dir)
    shapes = tensor_shapes(files)
    params: dict[str, int] = {}
    for key, shape in shapes.items():
        params[_group(key)] = params.get(_group(key), 0) + int(np.prod(shape))
    stored_dtype = _stored_dtype(files)
    clip_info: dict = {}
    try:
        clip_path = resolve_clip_dir(model_dir, config, clip_dir)
        from transformers import CLIPVisionConfig, CLIPVisionModel

        clip_cfg = CLIPVisionConfig.from_pretrained(str(clip_path))
        with torch.device("meta"):
            clip_params = sum(p.numel() for p in CLIPVisionModel(clip_cfg).parameters())
        clip_info = {"path": str(clip_path), "params": int(clip_params), "image_size": clip_cfg.image_size}
    except IvlmError as err:
        clip_info = {"path": None, "error": str(err)}
    raw = config.raw
    bytes_per = 4 if dtype == "float32" else 2  # bfloat16 and float16 take 2 bytes
    model_params = sum(v for k, v in params.items() if k != "ignored_rotary_buffers")
    weights_gb = (model_params + clip_info.get("params", 304_000_000)) * bytes_per / 1e9
    kv_gb = 2 * int(raw["num_hidden_layers"]) * 1024 * int(raw["hidden_size"]) * bytes_per / 1e9
    sam_act_gb = 0.5 * params.get("sam_image_encoder", 0) / 637e6 * bytes_per  # ~1 GB for ViT-H bf16, 4 views
    return {
        "checkpoint": str(model_dir),
        "weights_format": files.fmt,
        "shards": len(files.shards),
        "stored_dtype": stored_dtype,
        "token_type": config.token_type,
        "seg_token_ids": list(config.seg_token_ids),
        "llm": {
            k: raw.get(k)
            for k in (
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "vocab_size",
            )
        },
        "human_view_set": config.hC_sam_view_type,
        "object_view_set": config.oC_sam_view_type,
        "question_types": {"human": config.hC_question_type, "object": config.oC_question_type},
        "camera_encoder": config.cam_encoder_type,
        "inputs": describe_inputs(config, **inputs),
        "params": params,
        "total_params": model_params,
        "clip": clip_info,
        "memory_estimate_gb": {
            "dtype": dtype,
            "weights_incl_clip": round(weights_gb, 2),
            "kv_cache_1024_tokens": round(kv_gb, 2),
            "sam_activations": round(sam_act_gb, 2),
            "total": round(weights_gb + kv_gb + sam_act_gb + 0.5, 2),
        },
    }


def _stored_dtype(files) -> str:
    from ivlm_core.model.checkpoint import iter_shards

    for shard in iter_shards(files):
        for tensor in shard.values():
            return str(tensor.dtype).replace("torch.", "")
    return "unknown"




def _print_info(info: dict) -> None:
    print(
        f"checkpoint     {info['checkpoint']} ({info['weights_format']}, {info['shards']} shard(s), "
        f"stored {info['stored_dtype']})"
    )
    print(f"token type     {info['token_type']}  mask token ids {info['seg_token_ids']}")
    print("llm            " + ", ".join(f"{k}={v}" for k, v in info["llm"].items()))
    print(
        f"views          human={info['human_view_set']} object={info['object_view_set']}  "
        f"camera encoder={info['camera_encoder']}"
    )
    for group, count in sorted(info["params"].items()):
        print(f"  {group:<24} {count / 1e6:12.2f} M")
    print(f"  {'total (checkpoint)':<24} {info['total_params'] / 1e6:12.2f} M")
    inputs = info["inputs"]
    renders = inputs["human_renders"]
    print(f"human renders  {renders['source']}")
    for view, diff in renders.get("ivlm_render_mean_abs_diff", {}).items():
        print(f"  ivlm render vs shipped, {view:<12} mean |diff| {diff:.2f} / 255")
    questions = inputs["question_types"]
    print(f"questions      human={questions['human']} object={questions['object']} (from {questions['from']})")
    cams = inputs["object_encoder_cameras"]
    print(f"object cams    {cams['set']} at distance {cams['distance']} ({cams['reason']})")
    clip = info["clip"]
    print(
        f"clip tower     {clip.get('path') or 'NOT FOUND: ' + clip.get('error', '')}"
        + (f" ({clip['params'] / 1e6:.1f} M params)" if clip.get("params") else "")
    )
    mem = info["memory_estimate_gb"]
    print(
        f"memory ({mem['dtype']}) weights+clip {mem['weights_incl_clip']} GB, KV cache {mem['kv_cache_1024_tokens']}"
        f" GB, SAM activations ~{mem['sam_activations']} GB, total ~{mem['total']} GB"
    )


def run_info(args: argparse.Namespace) -> int:
    info = checkpoint_info(
        args.checkpoint, args.clip_dir, args.dtype, reference_data_dir=args.reference_data_dir,
        body_model_dir=args.body_model_dir, smpl_to_smplx=args.smpl_to_smplx, question_type=args.template,
        object_cam_distance=args.object_cam_distance,
    )
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from ivlm_core.model.checkpoint import convert_to_safetensors

    print(convert_to_safetensors(args.checkpoint, args.out))
    return 0
