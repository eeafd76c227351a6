"""Load a released InteractVLM checkpoint folder exactly as released, and convert it to safetensors once.

A release folder holds `config.json`, sharded `pytorch_model-*.bin` + `pytorch_model.bin.index.json` (or
`model*.safetensors`), and the slow LLaMA tokenizer files. The CLIP ViT-L/14 tower is NOT inside: it is read
from a local folder (config `vision_tower` resolved relative to the checkpoint, an explicit `clip_dir`, or the
local Hugging Face cache; never downloaded). Every tensor in the checkpoint must land in a parameter and every
parameter must come from the checkpoint; only the rotary `inv_freq` buffers of old transformers are skipped.

Memory: the LLM is built on the meta device and materialised directly on the target device in the target
dtype, and `.bin` shards are memory-mapped, so a 13B model never needs a full fp32 copy in host RAM.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ivlm_core.errors import CheckpointError, MissingAssetError
from ivlm_core.model.attention_splitter import AttentionSplitter
from ivlm_core.model.camera_encoder import ViV1CameraEncoder
from ivlm_core.model.llava import LlavaModel, llama_config_from_checkpoint
from ivlm_core.model.modeling import InteractVLMModel
from ivlm_core.model.predictor import InteractVLMPredictor
from ivlm_core.model.processing import InteractVLMProcessor
from ivlm_core.model.prompts import (
    HSEG_TOKEN,
    IM_END_TOKEN,
    IM_START_TOKEN,
    OSEG_TOKEN,
    SEG_TOKEN,
    PromptTokenizer,
)
from ivlm_core.model.sam import RELEASED_SAM_PREFIX, ContactSam, SamSpec
from ivlm_core.progress import ProgressCallback, ProgressReporter

CONFIG_NAME = "config.json"
BIN_INDEX = "pytorch_model.bin.index.json"
SAFE_INDEX = "model.safetensors.index.json"
SUPPORTED_TOKEN_TYPES = ("Gen", "Gen-Hu-Obj")
DEFAULT_CLIP_NAME = "openai/clip-vit-large-patch14"

_IGNORED_KEY = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")
_VISION_TOWER_PREFIX = "model.vision_tower.vision_tower."
_LLM_KEY = re.compile(r"^(lm_head\.|model\.(embed_tokens|layers|norm)\.)")


# ------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class InteractVLMConfig:
    """The InteractVLM-specific part of `config.json` (the LLaMA sizes are read by `llama_config_...`)."""

    raw: Mapping
    token_type: str
    seg_token_idx: int
    hseg_token_idx: int | None
    oseg_token_idx: int | None
    out_dim: int
    mm_hidden_size: int
    mm_vision_select_layer: int
    mm_vision_select_feature: str
    mm_use_im_start_end: bool
    multiview_channels: int
    multiview_cam_cond: bool
    cam_encoder_type: str | None
    hC_sam_view_type: str | None
    oC_sam_view_type: str | None
    hC_question_type: str
    oC_question_type: str
    eos_token_id: int
    bos_token_id: int

    @property
    def seg_token_ids(self) -> tuple[int, ...]:
        """Every id that the reference treats as a mask token for this token type."""
        ids = [self.seg_token_idx]
        if self.token_type == "Gen-Hu-Obj":
            ids += [i for i in (self.hseg_token_idx, self.oseg_token_idx) if i is not None]
        return tuple(ids)


def read_config(model_dir: str | Path) -> InteractVLMConfig:
    """Parse and validate `config.json` of a released checkpoint."""
    model_dir = Path(model_dir)
    path = model_dir / CONFIG_NAME
    if not path.is_file():
        raise MissingAssetError(
            "InteractVLM checkpoint config.json",
            path,
            "Point to the unzipped release folder (e.g. trained_models/interactvlm-3d-hcontact-damon).",
        )
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    needed = (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
        "mm_hidden_size",
        "out_dim",
        "seg_token_idx",
        "token_type",
    )
    missing = [k for k in needed if cfg.get(k) is None]
    if missing:
        raise CheckpointError(f"{path} lacks the InteractVLM/LLaVA keys {missing}; is this a released model?")
    token_type = str(cfg["token_type"])
    if token_type not in SUPPORTED_TOKEN_TYPES:
        raise CheckpointError(
            f"{path}: token_type '{token_type}' is not supported (supported: {SUPPORTED_TOKEN_TYPES})."
        )
    if token_type == "Gen-Hu-Obj" and (cfg.get("hseg_token_idx") is None or cfg.get("oseg_token_idx") is None):
        raise CheckpointError(f"{path}: token_type Gen-Hu-Obj needs hseg_token_idx and oseg_token_idx.")
    if cfg.get("use_fusion") or cfg.get("use_uncertainty"):
        raise CheckpointError(f"{path}: use_fusion/use_uncertainty models were never released and are unsupported.")
    cam_type = cfg.get("cam_encoder_type") if cfg.get("multiview_cam_cond") else None
    if cam_type not in (None, "vi_v1"):
        raise CheckpointError(f"{path}: cam_encoder_type '{cam_type}' is unsupported (only 'vi_v1' was released).")

    def opt_int(key: str) -> int | None:
        return None if cfg.get(key) is None else int(cfg[key])

    return InteractVLMConfig(
        raw=cfg,
        token_type=token_type,
        seg_token_idx=int(cfg["seg_token_idx"]),
        hseg_token_idx=opt_int("hseg_token_idx"),
        oseg_token_idx=opt_int("oseg_token_idx"),
        out_dim=int(cfg["out_dim"]),
        mm_hidden_size=int(cfg["mm_hidden_size"]),
        mm_vision_select_layer=int(cfg.get("mm_vision_select_layer", -2)),
        mm_vision_select_feature=str(cfg.get("mm_vision_select_feature", "patch")),
        mm_use_im_start_end=bool(cfg.get("mm_use_im_start_end", True)),
        multiview_channels=int(cfg.get("multiview_channels", 1) or 1),
        multiview_cam_cond=bool(cfg.get("multiview_cam_cond", False)),
        cam_encoder_type=cam_type,
        hC_sam_view_type=cfg.get("hC_sam_view_type"),
        oC_sam_view_type=cfg.get("oC_sam_view_type"),
        hC_question_type=str(cfg.get("hC_question_type") or "parts"),
        oC_question_type=str(cfg.get("oC_question_type") or "afford"),
        eos_token_id=int(cfg.get("eos_token_id", 2)),
        bos_token_id=int(cfg.get("bos_token_id", 1)),
    )


# ------------------------------------------------------------------------------------------------ weights
@dataclass(frozen=True)
class WeightFiles:
    """The weight shards of a checkpoint folder and their format."""

    fmt: str  # "safetensors" | "bin"
    shards: tuple[Path, ...]


def find_weight_files(model_dir: str | Path) -> WeightFiles:
    """Safetensors (preferred, e.g. after `convert`) or the released pickled `.bin` shards."""
    model_dir = Path(model_dir)
    for fmt, index_name, single in (
        ("safetensors", SAFE_INDEX, "model.safetensors"),
        ("bin", BIN_INDEX, "pytorch_model.bin"),
    ):
        index = model_dir / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as err:
                raise CheckpointError(f"{index} is not a valid weight index: {err}") from err
            shards = tuple(model_dir / name for name in sorted(set(weight_map.values())))
            absent = [s.name for s in shards if not s.is_file()]
            if absent:
                raise MissingAssetError(
                    "Checkpoint weight shard(s) " + ", ".join(absent),
                    model_dir,
                    "The release folder is incomplete; unzip it again.",
                )
            return WeightFiles(fmt, shards)
        if (model_dir / single).is_file():
            return WeightFiles(fmt, (model_dir / single,))
    raise MissingAssetError(
        "Checkpoint weights (pytorch_model-*.bin + index, or model*.safetensors)",
        model_dir,
        "Point to the unzipped release folder that holds the weight shards.",
    )


def _load_shard(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    """One shard on CPU; `.bin` pickles are read with weights_only=True and memory-mapped."""
    if fmt == "safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        # Legacy (non-zip) pickles cannot be memory-mapped.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"Could not read weight shard {path} with weights_only=True: {err}") from err


def iter_shards(files: WeightFiles) -> Iterator[dict[str, torch.Tensor]]:
    for shard in files.shards:
        yield _load_shard(shard, files.fmt)


def weight_bytes(files: WeightFiles) -> int:
    """Bytes on disk of all shards: the total that load / convert progress counts towards."""
    return sum(shard.stat().st_size for shard in files.shards)


def shard_progress(files: WeightFiles, task: str, callback: ProgressCallback | None = None,
                   bar: bool | None = None) -> ProgressReporter:
    """Bytes-done progress over the shards (tqdm bar on a terminal, `callback` with every update)."""
    return ProgressReporter(task, weight_bytes(files), unit="B", callback=callback, bar=bar)


def tensor_shapes(files: WeightFiles) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every stored tensor, without reading the data (safetensors header / mmap)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for shard in files.shards:
        if files.fmt == "safetensors":
            from safetensors import safe_open

            with safe_open(str(shard), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    shapes[key] = tuple(handle.get_slice(key).get_shape())
        else:
            shapes.update({k: tuple(v.shape) for k, v in _load_shard(shard, "bin").items()})
    return shapes


def convert_to_safetensors(model_dir: str | Path, out_dir: str | Path | None = None,
                           progress: ProgressCallback | None = None, progress_bar: bool | None = None) -> Path:
    """One-time conversion of the pickled `.bin` shards to `model-*.safetensors` (+ index).

    With `out_dir` None the safetensors files are written next to the `.bin` shards (the loader prefers them);
    otherwise config and tokenizer files are copied too, so `out_dir` is a complete checkpoint folder.
    Progress (bytes of shards converted) goes to a terminal bar and/or `progress`.
    """
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    out = model_dir if out_dir is None else Path(out_dir)
    files = find_weight_files(model_dir)
    if files.fmt == "safetensors" and out == model_dir:
        return model_dir
    out.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    total = 0
    n = len(files.shards)
    with shard_progress(files, "converting checkpoint", progress, progress_bar) as reporter:
        for k, (path, shard) in enumerate(zip(files.shards, iter_shards(files)), start=1):
            name = f"model-{k:05d}-of-{n:05d}.safetensors"
            tensors = {key: t.detach().contiguous().clone() for key, t in shard.items()}
            save_file(tensors, str(out / name), metadata={"format": "pt"})
            total += sum(t.numel() * t.element_size() for t in tensors.values())
            weight_map.update({key: name for key in tensors})
            del tensors, shard
            reporter.advance(path.stat().st_size)
    (out / SAFE_INDEX).write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2, sort_keys=True)
    )
    if out != model_dir:
        for item in model_dir.iterdir():
            if item.name.startswith("pytorch_model") or (out / item.name).exists():
                continue
            if item.is_dir():  # e.g. a CLIP folder kept inside the checkpoint
                shutil.copytree(item, out / item.name)
            elif item.is_file():
                shutil.copy2(item, out / item.name)
    return out


# ------------------------------------------------------------------------------------------------ tokenizer
@dataclass(frozen=True)
class TokenIds:
    seg: int
    hseg: int | None
    oseg: int | None
    im_start: int
    im_end: int
    bos: int
    eos: int


def load_tokenizer(model_dir: str | Path, config: InteractVLMConfig) -> tuple[object, PromptTokenizer, TokenIds]:
    """The slow LLaMA tokenizer as saved (use_fast=False, legacy, pad=unk) and our 4.31-exact encoder."""
    from transformers import LlamaTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "tokenizer.model").is_file():
        raise MissingAssetError(
            "LLaMA SentencePiece tokenizer (tokenizer.model)",
            model_dir / "tokenizer.model",
            "The release folder ships tokenizer.model, tokenizer_config.json and added_tokens.json; unzip it again.",
        )
    tok = LlamaTokenizer.from_pretrained(str(model_dir), use_fast=False, legacy=True, padding_side="right")
    tok.pad_token = tok.unk_token
    base = int(tok.sp_model.get_piece_size())
    added = {t.content: int(i) for i, t in tok.added_tokens_decoder.items() if int(i) >= base}
    expected = {SEG_TOKEN: config.seg_token_idx}
    if config.token_type == "Gen-Hu-Obj":
        expected.update({HSEG_TOKEN: config.hseg_token_idx, OSEG_TOKEN: config.oseg_token_idx})
    for token, idx in expected.items():
        if added.get(token) != idx:
            raise CheckpointError(
                f"Tokenizer in {model_dir} maps {token} to {added.get(token)}, but config.json says {idx}. "
                "The tokenizer files and config.json must come from the same release."
            )
    for token in (IM_START_TOKEN, IM_END_TOKEN):
        if token not in added and config.mm_use_im_start_end:
            raise CheckpointError(f"Tokenizer in {model_dir} lacks the added token {token}.")
    vocab = int(config.raw["vocab_size"])
    if added and max(added.values()) >= vocab:
        raise CheckpointError(f"Tokenizer ids reach {max(added.values())} but vocab_size is {vocab}.")
    ids = TokenIds(
        seg=config.seg_token_idx,
        hseg=config.hseg_token_idx,
        oseg=config.oseg_token_idx,
        im_start=added.get(IM_START_TOKEN, -1),
        im_end=added.get(IM_END_TOKEN, -1),
        bos=config.bos_token_id,
        eos=config.eos_token_id,
    )
    prompt_tok = PromptTokenizer(tok.sp_model, added, bos_id=ids.bos, eos_id=ids.eos, unk_id=int(tok.sp_model.unk_id()))
    return tok, prompt_tok, ids


# ------------------------------------------------------------------------------------------------ CLIP
def resolve_clip_dir(model_dir: str | Path, config: InteractVLMConfig, clip_dir: str | Path | None = None) -> Path:
    """Find the CLIP vision tower folder locally; MissingAssetError with the fix otherwise."""
    how = (
        "The CLIP tower is not part of the InteractVLM release. Put a local copy of "
        f"'{DEFAULT_CLIP_NAME}' (config.json, weights, preprocessor_config.json) on disk and pass its folder "
        "(--clip-dir / clip_dir=), or set config.json 'vision_tower' to that folder (absolute or relative to "
        "the checkpoint)."
    )
    if clip_dir is not None:
        path = Path(clip_dir)
        if not (path / "config.json").is_file():
            raise MissingAssetError("CLIP vision tower (config.json)", path, how)
        return path
    name = config.raw.get("vision_tower") or config.raw.get("mm_vision_tower") or DEFAULT_CLIP_NAME
    for candidate in (Path(model_dir) / name, Path(name)):
        if (candidate / "config.json").is_file():
            return candidate
    with contextlib.suppress(Exception):  # the local HF cache, offline only
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name), local_files_only=True))
    raise MissingAssetError(f"CLIP vision tower '{name}'", Path(model_dir) / str(name), how)


def load_clip(clip_path: Path, device: torch.device, dtype: torch.dtype):
    from transformers import CLIPImageProcessor, CLIPVisionModel

    if not (clip_path / "preprocessor_config.json").is_file():
        raise MissingAssetError(
            "CLIP preprocessor_config.json",
            clip_path / "preprocessor_config.json",
            f"Copy the full '{DEFAULT_CLIP_NAME}' folder, including its image-processor config.",
        )
    try:
        tower = CLIPVisionModel.from_pretrained(
            str(clip_path), dtype=dtype, attn_implementation="sdpa", local_files_only=True
        )
    except (OSError, ValueError) as err:
        raise CheckpointError(f"Could not load the CLIP vision tower from {clip_path}: {err}") from err
    processor = CLIPImageProcessor.from_pretrained(str(clip_path), local_files_only=True)
    return tower.to(device).eval(), processor


# ------------------------------------------------------------------------------------------------ building
def build_without_init(factory: Callable[[], nn.Module], device: torch.device) -> nn.Module:
    """`factory()` built on the meta device, then allocated (uninitialised) on `device`.

    Every value is loaded afterwards, so random init would be wasted seconds on SAM ViT-H. Building on the meta
    device skips it without touching `torch.nn.init` (a global patch would race other threads of a node).
    Only for modules without non-persistent buffers: those would be left uninitialised.
    """
    with torch.device("meta"):
        module = factory()
    persistent = set(module.state_dict(keep_vars=True))
    transient = [name for name, _ in module.named_buffers() if name not in persistent]
    if transient:
        raise TypeError(f"{type(module).__name__} has non-persistent buffers {transient}; build it normally.")
    return module.to_empty(device=device)


def build_llm_on_device(cfg: Mapping, device: torch.device, dtype: torch.dtype):
    """LlamaForCausalLM allocated directly on `device` in `dtype` (meta init + to_empty, no host copy)."""
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    llama_cfg = llama_config_from_checkpoint(dict(cfg))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            llm = LlamaForCausalLM(llama_cfg)
    finally:
        torch.set_default_dtype(previous)
    llm = llm.to_empty(device=device)
    # Non-persistent buffers are garbage after to_empty: rebuild the rotary table for real.
    llm.model.rotary_emb = LlamaRotaryEmbedding(llama_cfg, device=device)
    return llm.eval()


def sam_spec_for(config: InteractVLMConfig, shapes: Mapping[str, tuple[int, ...]], sam_spec: SamSpec | None) -> SamSpec:
    """Explicit spec > config `sam_config` > ViT-H; checked against the stored shapes before building."""
    if sam_spec is None:
        sam_spec = SamSpec.from_dict(config.raw["sam_config"]) if config.raw.get("sam_config") else SamSpec.vit_h()
    p = RELEASED_SAM_PREFIX + "image_encoder."
    s = sam_spec
    grid = s.image_size // s.patch_size
    checks = {
        p + "patch_embed.proj.weight": (s.encoder_embed_dim, 3, s.patch_size, s.patch_size),
        p + "pos_embed": (1, grid, grid, s.encoder_embed_dim),
        RELEASED_SAM_PREFIX + "mask_decoder.iou_token.weight": (1, s.prompt_embed_dim),
    }
    bad = [f"{k}: checkpoint {shapes.get(k)} vs spec {v}" for k, v in checks.items() if shapes.get(k) != v]
    depth = len({k.split(".")[4] for k in shapes if k.startswith(p + "blocks.")})
    if depth != s.encoder_depth:
        bad.append(f"image encoder depth: checkpoint {depth} vs spec {s.encoder_depth}")
    if bad:
        raise CheckpointError(
            "The checkpoint's SAM does not match the SAM architecture in use "
            f"({'from config sam_config' if config.raw.get('sam_config') else 'ViT-H default'}): "
            + "; ".join(bad)
            + ". Released models use SAM ViT-H; for other sizes add a 'sam_config' entry to "
            "config.json or pass sam_spec=."
        )
    if s.prompt_embed_dim != config.out_dim:
        raise CheckpointError(f"config out_dim {config.out_dim} != SAM prompt_embed_dim {s.prompt_embed_dim}.")
    return sam_spec


def released_to_internal(model: InteractVLMModel) -> dict[str, str]:
    """Released checkpoint name -> parameter name inside our InteractVLMModel, for every stored tensor."""
    mapping: dict[str, str] = {}
    for name in model.llava.llm.state_dict():
        mapping[name] = "llava.llm." + name
    for name in model.llava.mm_projector.state_dict():
        mapping["model.mm_projector." + name] = "llava.mm_projector." + name
    for name in model.llava.text_hidden_fcs.state_dict():
        mapping["model.text_hidden_fcs." + name] = "llava.text_hidden_fcs." + name
    for released, internal in model.sam.released_key_map().items():
        mapping[RELEASED_SAM_PREFIX + released] = "sam." + internal
    if model.cam_encoder is not None:
        for name in model.cam_encoder.state_dict():
            mapping["cam_pose_encoder." + name] = "cam_encoder." + name
    if model.splitter is not None:
        for name in model.splitter.state_dict():
            mapping["attention_splitter." + name] = "splitter." + name
    return mapping


def _shorten(items: list[str], limit: int = 10) -> str:
    return str(items) if len(items) <= limit else f"{items[:limit]} ... ({len(items)} in all)"


def build_model(
    config: InteractVLMConfig,
    spec: SamSpec,
    tower,
    device: torch.device,
    dtype: torch.dtype,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> InteractVLMModel:
    """An InteractVLMModel with UNINITIALISED weights, allocated directly on `device` in `dtype`.

    Sizes come from the config and, for the camera encoder / splitter, from the stored `shapes` (defaults
    hidden 128 when no checkpoint is given). The caller fills every weight (loader or random benchmark).
    """
    shapes = shapes or {}
    llm = build_llm_on_device(config.raw, device, dtype)
    llava = LlavaModel(
        llm,
        tower,
        config.mm_hidden_size,
        config.out_dim,
        config.mm_vision_select_layer,
        config.mm_vision_select_feature,
    )
    # The projector and fcs are small; the LLM and tower were built above, so only they are initialised here.
    llava.to(device=device)
    llava.mm_projector.to(dtype=dtype)
    llava.text_hidden_fcs.to(dtype=dtype)
    sam = build_without_init(lambda: ContactSam(spec), device)
    cam_encoder = None
    if config.cam_encoder_type == "vi_v1":
        first = shapes.get("cam_pose_encoder.spatial_encoder.0.weight", (128, 5))
        last = shapes.get("cam_pose_encoder.view_transforms.0.weight", (config.out_dim, 128))
        views = {k.split(".")[2] for k in shapes if k.startswith("cam_pose_encoder.view_transforms.")}
        cam_encoder = build_without_init(
            lambda: ViV1CameraEncoder(
                num_views=len(views) or config.multiview_channels,
                out_dim=last[0],
                hidden_dim=first[0],
                input_dim=first[1],
            ),
            device,
        ).to(dtype=dtype)
    splitter = None
    if config.token_type == "Gen-Hu-Obj":
        w = shapes.get("attention_splitter.input_proj.weight", (128, config.out_dim))
        splitter = build_without_init(lambda: AttentionSplitter(dim=w[1], hidden=w[0]), device).to(dtype=dtype)
    return InteractVLMModel(config, llava, sam.to(dtype=dtype), cam_encoder, splitter)


def load_model(
    model_dir: str | Path,
    clip_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    sam_spec: SamSpec | None = None,
    progress: ProgressCallback | None = None,
    progress_bar: bool | None = None,
) -> tuple[InteractVLMModel, InteractVLMProcessor, Path]:
    """The weights (`InteractVLMModel`, eval, no grad) and the processor of a released folder, and the CLIP
    folder used. Most callers want `load_checkpoint`, which wraps both in the task API.

    Weight loading reports bytes done, tensor by tensor, to a tqdm bar on a terminal (`progress_bar` forces
    it on/off) and to `progress` (e.g. a node's `ThrottledProgressLog`).
    """
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    files = find_weight_files(model_dir)
    shapes = tensor_shapes(files)
    hf_tokenizer, prompt_tokenizer, token_ids = load_tokenizer(model_dir, config)
    spec = sam_spec_for(config, shapes, sam_spec)
    clip_path = resolve_clip_dir(model_dir, config, clip_dir)
    tower, image_processor = load_clip(clip_path, device, dtype)

    if config.cam_encoder_type == "vi_v1" and "cam_pose_encoder.spatial_encoder.0.weight" not in shapes:
        raise CheckpointError("config.json enables the vi_v1 camera encoder but the weights lack 'cam_pose_encoder.*'.")
    if config.token_type == "Gen-Hu-Obj" and "attention_splitter.input_proj.weight" not in shapes:
        raise CheckpointError("token_type Gen-Hu-Obj needs the 'attention_splitter.*' weights.")
    model = build_model(config, spec, tower, device, dtype, shapes=shapes)
    mapping = released_to_internal(model)
    _check_keys(shapes, mapping, model)
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    tower_sd: dict[str, torch.Tensor] = {}
    with torch.no_grad(), shard_progress(files, "loading checkpoint", progress, progress_bar) as reporter:
        for path, shard in zip(files.shards, iter_shards(files)):
            start, size, copied = reporter.done, path.stat().st_size, 0
            for key, tensor in shard.items():
                copied += tensor.numel() * tensor.element_size()
                reporter.set(start + min(copied, size))
                if _IGNORED_KEY.match(key):
                    continue
                if key.startswith(_VISION_TOWER_PREFIX):
                    tower_sd[key[len(_VISION_TOWER_PREFIX) :]] = tensor
                    continue
                params[mapping[key]].copy_(tensor)
            del shard
            reporter.set(start + size)
    if tower_sd:
        # Not in the release, but if a checkpoint does carry the tower, its weights win over the folder's.
        missing, unexpected = model.llava.vision_tower.load_state_dict(tower_sd, strict=False)
        if unexpected or [m for m in missing if not m.endswith("position_ids")]:
            raise CheckpointError(
                f"Vision tower keys in the checkpoint do not fit the CLIP config: "
                f"missing {_shorten(missing)}, unexpected {_shorten(unexpected)}."
            )
    # An inference model: no autograd bookkeeping, and tensors made in inference mode can be reused anywhere.
    model.requires_grad_(False)
    processor = InteractVLMProcessor(config, prompt_tokenizer, token_ids, image_processor, spec, hf_tokenizer)
    return model.eval(), processor, clip_path


def load_checkpoint(
    model_dir: str | Path,
    clip_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    sam_spec: SamSpec | None = None,
    progress: ProgressCallback | None = None,
    progress_bar: bool | None = None,
    **predictor_kwargs,
) -> InteractVLMPredictor:
    """Load a released InteractVLM folder into an `InteractVLMPredictor` ready for inference.

    device defaults to CUDA when available; dtype to bf16 on GPU and fp32 on CPU. `sam_spec` overrides the
    SAM architecture (ViT-H, or config.json 'sam_config'). Loading progress goes to a terminal bar and/or
    `progress` (see `load_model`). Extra keyword arguments go to the predictor (human assets, contact
    transfer, object render distance...).
    """
    model, processor, clip_path = load_model(model_dir, clip_dir, device, dtype, sam_spec, progress, progress_bar)
    predictor = InteractVLMPredictor(model, processor, **predictor_kwargs)
    predictor.checkpoint_dir = Path(model_dir)
    predictor.clip_dir = clip_path
    return predictor


def _check_keys(shapes: Mapping[str, tuple[int, ...]], mapping: Mapping[str, str], model: nn.Module) -> None:
    """Every stored key maps to a parameter of the right shape, and every parameter is stored."""
    own = dict(model.named_parameters())
    own.update(dict(model.named_buffers()))
    stored = {k for k in shapes if not _IGNORED_KEY.match(k) and not k.startswith(_VISION_TOWER_PREFIX)}
    unknown = sorted(stored - set(mapping))
    missing = sorted(set(mapping) - stored)
    mismatched = [
        f"{k}: checkpoint {shapes[k]} vs model {tuple(own[mapping[k]].shape)}"
        for k in sorted(stored & set(mapping))
        if tuple(shapes[k]) != tuple(own[mapping[k]].shape)
    ]
    if unknown or missing or mismatched:
        raise CheckpointError(
            "Checkpoint weights do not match the InteractVLM architecture built from config.json. "
            f"Unknown keys: {_shorten(unknown)}. Missing keys: {_shorten(missing)}. "
            f"Shape mismatches: {_shorten(mismatched)}."
        )
