"""`ivlm-model`: inspect, convert and run a released InteractVLM checkpoint from the command line.

    ivlm-model info CKPT [--clip-dir DIR] [--json]
    ivlm-model convert CKPT [--out DIR]
    ivlm-model predict CKPT IMAGE [--object NAME] [--task human|object|2d] [--mesh OBJ]
                       [--data-dir DATA | --body-model-dir DIR] [--clip-dir DIR] [--out DIR]

(also `python -m ivlm_core.model.cli ...`). `predict` writes the contacts as .npz (reference key names
included, so the files drop into the reference `optim/` fitting), a PNG of the 4 views with their masks and,
when the body model files are there, a coloured SMPL-X mesh (.ply and .glb).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ivlm_core.errors import InvalidInputError, IvlmError

HUMAN_OVERLAY_LOGIT = 0.3  # the reference demo paints human masks where logit > 0.3
OBJECT_OVERLAY_LOGIT = 0.5  # object and 2D overlays use 0.5
SMPLX_CONTACT_COLOUR_THRESHOLD = 0.3  # demo colouring of SMPL-X vertices
OBJECT_CONTACT_COLOUR_THRESHOLD = 0.5


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


def checkpoint_info(model_dir: str | Path, clip_dir: str | Path | None = None, dtype: str = "bf16") -> dict:
    """Sizes, dtypes and a memory estimate read from config + weight headers (no model is built)."""
    import torch

    from ivlm_core.model.checkpoint import find_weight_files, read_config, resolve_clip_dir, tensor_shapes

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
    bytes_per = 2 if dtype == "bf16" else 4
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


# ------------------------------------------------------------------------------------------------ predict
def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise InvalidInputError(f"Image '{path}' does not exist.")
    return np.asarray(Image.open(path).convert("RGB"))


def _overlay_grid(images: np.ndarray, logits: np.ndarray, threshold: float) -> np.ndarray:
    """2x2 (or 1x1) grid of the SAM inputs with the predicted mask painted red."""
    tiles = []
    for image, logit in zip(images, logits):
        tile = image.astype(np.float32).copy()
        mask = logit > threshold
        tile[mask] = 0.45 * tile[mask] + 0.55 * np.array([255.0, 0.0, 0.0])
        tiles.append(tile.astype(np.uint8))
    if len(tiles) == 1:
        return tiles[0]
    while len(tiles) % 2:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[i : i + 2], axis=1) for i in range(0, len(tiles), 2)]
    return np.concatenate(rows, axis=0)


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def _export_coloured_mesh(
    vertices: np.ndarray, faces: np.ndarray, contacts: np.ndarray, threshold: float, stem: Path
) -> list[Path]:
    import trimesh

    colours = np.tile(np.array([200, 200, 200, 255], np.uint8), (len(vertices), 1))
    colours[contacts > threshold] = [230, 30, 30, 255]
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colours, process=False)
    paths = [stem.with_suffix(".ply"), stem.with_suffix(".glb")]
    for path in paths:
        mesh.export(path)
    return paths


def _smplx_mesh(body_model_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    from ivlm_core.body.models import load_body_model, posed_mesh

    try:
        model = load_body_model(body_model_dir, "smplx")
    except IvlmError:
        return None
    mesh = posed_mesh(model)
    return mesh.vertices[0].detach().cpu().numpy(), np.asarray(mesh.faces)


def predict(args: argparse.Namespace) -> dict:
    import torch

    from ivlm_core.model.checkpoint import load_checkpoint
    from ivlm_core.model.predictor import NoContactFound
    from ivlm_core.model.processing import HumanRenderAssets
    from ivlm_core.model.prompts import object_name_from_filename
    from ivlm_core.model.sam import SamSpec

    image_path = Path(args.image)
    image = _read_image(image_path)
    object_name = args.object or object_name_from_filename(image_path.name)
    out_dir = Path(args.out or image_path.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / image_path.stem
    transfer = None
    body_dir = Path(args.body_model_dir) if args.body_model_dir else None
    if body_dir is not None:
        from ivlm_core.body.transfer import ContactTransfer, find_transfer_file

        try:
            transfer = ContactTransfer.load(find_transfer_file(body_dir))
        except IvlmError as err:
            print(f"note: no SMPL-X transfer ({err}); writing SMPL-H contacts only", file=sys.stderr)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, None: None}[args.dtype]
    sam_spec = SamSpec.from_dict(json.loads(Path(args.sam_config).read_text())) if args.sam_config else None
    model = load_checkpoint(
        args.checkpoint,
        clip_dir=args.clip_dir,
        device=args.device,
        dtype=dtype,
        sam_spec=sam_spec,
        contact_transfer=transfer,
        object_render_dist=args.object_dist,
        object_cam_dist=args.object_dist,
    )
    common = {"generate": not args.no_generate, "naive": args.naive, "max_new_tokens": args.max_new_tokens}
    written: list[Path] = []
    if args.task == "human":
        if args.data_dir:
            assets = HumanRenderAssets.from_reference_folder(args.data_dir, model.human_view_set)
        elif body_dir is not None:
            assets = HumanRenderAssets.render_vitruvian(body_dir, model.human_view_set)
        else:
            raise InvalidInputError(
                "The human task needs --data-dir (reference data/ with hcontact_vitruvian/) "
                "or --body-model-dir (SMPL-H files; ivlm renders the body itself)."
            )
        model.set_human_assets(assets)
        result = model.predict_human_contact(image, object_name, template=args.template, **common)
    elif args.task == "object":
        if not args.mesh:
            raise InvalidInputError("The object task needs --mesh <object mesh file>.")
        import trimesh

        mesh = trimesh.load(args.mesh, process=False, force="mesh")
        vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
        result = model.predict_object_contact(image, object_name, vertices, faces, template=args.template, **common)
    else:
        result = model.predict_human_contact_2d(image, object_name, **common)

    lang = result.language
    summary = {
        "task": args.task,
        "object": object_name,
        "text": lang.text,
        "seg_token": lang.seg_token,
        "body_parts": list(lang.body_parts),
        "affordance": lang.affordance,
        "found": result.found,
        "timings": {k: round(v, 4) for k, v in result.timings.items()},
    }
    if isinstance(result, NoContactFound):
        summary["files"] = []
        return summary
    if args.task == "human":
        arrays = {
            "pred_contact_3d_smplh": result.contacts_smplh[None],
            "view_logits": result.view_logits,
            "iou": result.iou,
            "text": np.array(lang.text),
        }
        if result.contacts_smplx is not None:
            arrays["pred_contact_3d_smplx"] = result.contacts_smplx
        path = stem.parent / f"{stem.name}_hcontact_vertices.npz"
        np.savez_compressed(path, **arrays)
        written.append(path)
        grid = _overlay_grid(model.human_assets.renders, result.view_logits, HUMAN_OVERLAY_LOGIT)
        png = stem.parent / f"{stem.name}_hcontact_views.png"
        _save_png(grid, png)
        written.append(png)
        body = _smplx_mesh(body_dir) if (body_dir is not None and result.contacts_smplx is not None) else None
        if body is not None:
            written += _export_coloured_mesh(
                *body,
                result.contacts_smplx,
                SMPLX_CONTACT_COLOUR_THRESHOLD,
                stem.parent / f"{stem.name}_hcontact_smplx",
            )
    elif args.task == "object":
        path = stem.parent / f"{stem.name}_ocontact_vertices.npz"
        np.savez_compressed(
            path,
            pred_contact_3d=result.contacts[None],
            view_logits=result.view_logits,
            iou=result.iou,
            text=np.array(lang.text),
        )
        written.append(path)
        png = stem.parent / f"{stem.name}_ocontact_views.png"
        _save_png(_overlay_grid(result.renders, result.view_logits, OBJECT_OVERLAY_LOGIT), png)
        written.append(png)
        written += _export_coloured_mesh(
            vertices,
            faces,
            result.contacts,
            OBJECT_CONTACT_COLOUR_THRESHOLD,
            stem.parent / f"{stem.name}_ocontact_mesh",
        )
    else:
        path = stem.parent / f"{stem.name}_h2dcontact.npz"
        np.savez_compressed(path, logits=result.logits, text=np.array(lang.text))
        written.append(path)
        png = stem.parent / f"{stem.name}_h2dcontact.png"
        _save_png(_overlay_grid(image[None], result.logits[None], OBJECT_OVERLAY_LOGIT), png)
        written.append(png)
    summary["files"] = [str(p) for p in written]
    return summary


# ------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ivlm-model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="config, sizes, dtype and memory estimate of a checkpoint")
    info.add_argument("checkpoint")
    info.add_argument("--clip-dir", default=None)
    info.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="dtype of the estimate")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")

    convert = sub.add_parser("convert", help="one-time conversion of the .bin shards to safetensors")
    convert.add_argument("checkpoint")
    convert.add_argument("--out", default=None, help="output folder (default: next to the .bin shards)")

    pred = sub.add_parser("predict", help="run one task on one image")
    pred.add_argument("checkpoint")
    pred.add_argument("image")
    pred.add_argument(
        "--object", default=None, help="object name (default: file name before '__'); 'scene' = ground contact"
    )
    pred.add_argument("--task", choices=("human", "object", "2d"), default="human")
    pred.add_argument("--mesh", default=None, help="object mesh (object task)")
    pred.add_argument("--template", default=None, help="human: parts|simple; object: afford|contact")
    pred.add_argument("--no-generate", action="store_true", help="append the mask token, single forward")
    pred.add_argument("--naive", action="store_true", help="reference-style decoding without KV cache")
    pred.add_argument("--max-new-tokens", type=int, default=512)
    pred.add_argument("--clip-dir", default=None, help="local openai/clip-vit-large-patch14 folder")
    pred.add_argument("--data-dir", default=None, help="reference data/ folder (hcontact_vitruvian/)")
    pred.add_argument("--body-model-dir", default=None, help="SMPL-H/SMPL-X files + smpl_to_smplx.pkl")
    pred.add_argument("--object-dist", type=float, default=1.5, help="object render + camera distance")
    pred.add_argument("--sam-config", default=None, help="JSON SamSpec (non-ViT-H checkpoints only)")
    pred.add_argument("--device", default=None)
    pred.add_argument("--dtype", choices=("bf16", "fp32"), default=None)
    pred.add_argument("--out", default=None, help="output folder (default: next to the image)")
    return parser


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "info":
            info = checkpoint_info(args.checkpoint, args.clip_dir, args.dtype)
            if args.json:
                print(json.dumps(info, indent=2))
            else:
                _print_info(info)
        elif args.command == "convert":
            from ivlm_core.model.checkpoint import convert_to_safetensors

            print(convert_to_safetensors(args.checkpoint, args.out))
        else:
            print(json.dumps(predict(args), indent=2))
    except IvlmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
