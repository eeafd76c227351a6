"""Segment Anything (SAM) as InteractVLM uses it: multi-view decoding of camera-conditioned [SEG] tokens.

The layers come from `transformers`' SAM implementation (the official `segment_anything` package imports
torchvision, which this torch cannot use). The released InteractVLM checkpoint stores SAM under the
original `segment_anything` names, so `load_released_state_dict` translates them with an explicit,
bijective key map (spec section 4.3) and refuses any checkpoint that does not match it exactly.

Numerics follow the reference: LayerNorm eps 1e-6 in the image encoder, neck and output upscaling, eps
1e-5 in the two-way transformer, exact GELU in the encoder and upscaling, ReLU in the decoder MLPs,
cross-attention downsample rate 2.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers.models.sam.configuration_sam import (
    SamConfig,
    SamMaskDecoderConfig,
    SamPromptEncoderConfig,
    SamVisionConfig,
)
from transformers.models.sam.modeling_sam import (
    SamMaskDecoder,
    SamPatchEmbeddings,
    SamPromptEncoder,
    SamVisionLayer,
    SamVisionNeck,
)

from ivlm_core.errors import CheckpointError, InvalidInputError

RELEASED_SAM_PREFIX = "model.visual_model."
"""Prefix of every SAM key inside the released InteractVLM checkpoint."""


@dataclass(frozen=True)
class SamSpec:
    """Hyper-parameters of one SAM; `vit_h()` is the released model, tests use tiny ones."""

    image_size: int
    patch_size: int
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    window_size: int
    mlp_ratio: float
    prompt_embed_dim: int
    mask_in_chans: int
    decoder_depth: int
    decoder_mlp_dim: int
    decoder_num_heads: int
    num_multimask_outputs: int
    iou_head_depth: int
    iou_head_hidden_dim: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]

    def __post_init__(self) -> None:
        # Lists from JSON become tuples so the spec stays hashable and immutable.
        object.__setattr__(self, "encoder_global_attn_indexes", tuple(self.encoder_global_attn_indexes))
        object.__setattr__(self, "pixel_mean", tuple(float(x) for x in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(x) for x in self.pixel_std))
        if self.image_size % self.patch_size:
            raise InvalidInputError(
                f"SAM image_size {self.image_size} must be a multiple of patch_size {self.patch_size}."
            )
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3:
            raise InvalidInputError("SAM pixel_mean and pixel_std need exactly 3 (RGB) values each.")

    @property
    def embedding_size(self) -> int:
        """Side of the square image-embedding grid (64 for ViT-H at 1024 px)."""
        return self.image_size // self.patch_size

    @classmethod
    def vit_h(cls) -> SamSpec:
        """SAM ViT-H exactly as `build_sam_vit_h` builds it for InteractVLM."""
        return cls(
            image_size=1024,
            patch_size=16,
            encoder_embed_dim=1280,
            encoder_depth=32,
            encoder_num_heads=16,
            encoder_global_attn_indexes=(7, 15, 23, 31),
            window_size=14,
            mlp_ratio=4.0,
            prompt_embed_dim=256,
            mask_in_chans=16,
            decoder_depth=2,
            decoder_mlp_dim=2048,
            decoder_num_heads=8,
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            pixel_mean=(123.675, 116.28, 103.53),
            pixel_std=(58.395, 57.12, 57.375),
        )

    @classmethod
    def tiny(cls) -> SamSpec:
        """A SAM of a few thousand parameters with ViT-H's structure (windowed + global blocks), for CPU
        smoke runs (`model_latency --tiny`) and tests; its weights mean nothing."""
        return replace(
            cls.vit_h(),
            image_size=64,
            encoder_embed_dim=16,
            encoder_depth=2,
            encoder_num_heads=2,
            encoder_global_attn_indexes=(1,),
            window_size=2,
            mlp_ratio=2.0,
            prompt_embed_dim=32,
            mask_in_chans=4,
            decoder_mlp_dim=64,
            decoder_num_heads=4,
            iou_head_hidden_dim=32,
        )

    @classmethod
    def from_dict(cls, d: Mapping) -> SamSpec:
        """Build from the parity `config.json` 'sam' block (a dict holding a 'sam' block is accepted too)."""
        if "sam" in d and isinstance(d["sam"], Mapping):
            d = d["sam"]
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(d))
        unknown = sorted(set(d) - names)
        if missing or unknown:
            raise InvalidInputError(f"SAM spec dict: missing keys {missing}, unknown keys {unknown}.")
        return cls(**{k: d[k] for k in names})

    @classmethod
    def from_released_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        decoder_num_heads: int,
        pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53),
        pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375),
    ) -> SamSpec:
        """Read the sizes off released SAM weights (keys without the prefix), for checkpoints with no config.

        The decoder head count leaves no trace in the weights, so it must be given (8 for SAM ViT-H).
        A block counts as global when its rel-pos table spans the whole grid (windowed attention with a
        window as large as the grid is the same computation).
        """
        try:
            patch_w = state_dict["image_encoder.patch_embed.proj.weight"]
            pos = state_dict["image_encoder.pos_embed"]
            neck = state_dict["image_encoder.neck.0.weight"]
            mask_conv = state_dict["prompt_encoder.mask_downscaling.3.weight"]
            iou_hidden = state_dict["mask_decoder.iou_prediction_head.layers.0.weight"]
            mask_tokens = state_dict["mask_decoder.mask_tokens.weight"]
        except KeyError as err:
            raise CheckpointError(f"SAM weights lack {err}; cannot infer the SAM size.") from None
        embed, patch = patch_w.shape[0], patch_w.shape[-1]
        grid = pos.shape[1]
        blocks = sorted({int(k.split(".")[2]) for k in state_dict if k.startswith("image_encoder.blocks.")})
        rel_lengths = [state_dict[f"image_encoder.blocks.{b}.attn.rel_pos_h"].shape[0] for b in blocks]
        head_dim = state_dict[f"image_encoder.blocks.{blocks[0]}.attn.rel_pos_h"].shape[1]
        windowed = [n for n in rel_lengths if n != 2 * grid - 1]
        layer_ids = {
            int(k.split(".")[3]) for k in state_dict if k.startswith("mask_decoder.transformer.layers.")
        }
        iou_layers = {k for k in state_dict if k.startswith("mask_decoder.iou_prediction_head.layers.")}
        return cls(
            image_size=grid * patch,
            patch_size=patch,
            encoder_embed_dim=embed,
            encoder_depth=len(blocks),
            encoder_num_heads=embed // head_dim,
            encoder_global_attn_indexes=tuple(b for b, n in zip(blocks, rel_lengths) if n == 2 * grid - 1),
            window_size=(windowed[0] + 1) // 2 if windowed else grid,
            mlp_ratio=state_dict["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / embed,
            prompt_embed_dim=neck.shape[0],
            mask_in_chans=mask_conv.shape[0],
            decoder_depth=len(layer_ids),
            decoder_mlp_dim=state_dict["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
            decoder_num_heads=decoder_num_heads,
            num_multimask_outputs=mask_tokens.shape[0] - 1,
            iou_head_depth=len(iou_layers) // 2,
            iou_head_hidden_dim=iou_hidden.shape[0],
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
        )

    def to_dict(self) -> dict:
        """JSON-friendly form, the inverse of `from_dict`."""
        d = asdict(self)
        for key in ("encoder_global_attn_indexes", "pixel_mean", "pixel_std"):
            d[key] = list(d[key])
        return d

    def to_hf_config(self, attn_implementation: str = "sdpa") -> SamConfig:
        """The equivalent `transformers` SamConfig (decoder LayerNorm eps set to the reference's 1e-5)."""
        vision = SamVisionConfig(
            hidden_size=self.encoder_embed_dim,
            output_channels=self.prompt_embed_dim,
            num_hidden_layers=self.encoder_depth,
            num_attention_heads=self.encoder_num_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_act="gelu",
            layer_norm_eps=1e-6,
            qkv_bias=True,
            mlp_ratio=self.mlp_ratio,
            use_abs_pos=True,
            use_rel_pos=True,
            window_size=self.window_size,
            global_attn_indexes=list(self.encoder_global_attn_indexes),
            num_pos_feats=self.prompt_embed_dim // 2,
        )
        prompt = SamPromptEncoderConfig(
            hidden_size=self.prompt_embed_dim,
            image_size=self.image_size,
            patch_size=self.patch_size,
            mask_input_channels=self.mask_in_chans,
            num_point_embeddings=4,
            hidden_act="gelu",
            layer_norm_eps=1e-6,
        )
        decoder = SamMaskDecoderConfig(
            hidden_size=self.prompt_embed_dim,
            hidden_act="relu",
            mlp_dim=self.decoder_mlp_dim,
            num_hidden_layers=self.decoder_depth,
            num_attention_heads=self.decoder_num_heads,
            attention_downsample_rate=2,
            num_multimask_outputs=self.num_multimask_outputs,
            iou_head_depth=self.iou_head_depth,
            iou_head_hidden_dim=self.iou_head_hidden_dim,
            layer_norm_eps=1e-5,
        )
        config = SamConfig(
            vision_config=vision.to_dict(),
            prompt_encoder_config=prompt.to_dict(),
            mask_decoder_config=decoder.to_dict(),
        )
        for sub in (config, config.vision_config, config.prompt_encoder_config, config.mask_decoder_config):
            sub._attn_implementation = attn_implementation
        return config


class SamImageEncoder(nn.Module):
    """ViT with windowed + global attention, decomposed relative positions and a conv neck.

    Same child names as `transformers`' SamVisionEncoder, but a plain module: no PreTrainedModel
    machinery, so it can be built on the meta device and loaded with `assign=True`.
    """

    def __init__(self, config: SamVisionConfig) -> None:
        super().__init__()
        grid = config.image_size // config.patch_size
        self.patch_embed = SamPatchEmbeddings(config)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, config.hidden_size))
        self.layers = nn.ModuleList(
            SamVisionLayer(config, window_size=0 if i in config.global_attn_indexes else config.window_size)
            for i in range(config.num_hidden_layers)
        )
        self.neck = SamVisionNeck(config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.patch_embed(pixel_values) + self.pos_embed
        for layer in self.layers:
            hidden = layer(hidden)
        return self.neck(hidden)


# --- released (segment_anything) <-> internal (transformers) parameter names -------------------------------

_Rule = tuple[str, Callable[[re.Match], str] | str]


def _mlp_rule(internal_prefix: str, released_prefix: str, depth: int) -> list[_Rule]:
    """SAM's MLP keeps `layers.0..depth-1`; transformers splits them into proj_in, layers.*, proj_out."""
    return [
        (rf"{internal_prefix}\.proj_in\.(\w+)", rf"{released_prefix}.layers.0.\1"),
        (
            rf"{internal_prefix}\.layers\.(\d+)\.(\w+)",
            lambda m: f"{released_prefix}.layers.{int(m.group(1)) + 1}.{m.group(2)}",
        ),
        (rf"{internal_prefix}\.proj_out\.(\w+)", rf"{released_prefix}.layers.{depth - 1}.\1"),
    ]


def _internal_to_released_rules(spec: SamSpec) -> list[_Rule]:
    enc, pe, dec = "image_encoder", "prompt_encoder", "mask_decoder"
    rules: list[_Rule] = [
        # image encoder
        (r"image_encoder\.patch_embed\.projection\.(\w+)", rf"{enc}.patch_embed.proj.\1"),
        (r"image_encoder\.pos_embed", f"{enc}.pos_embed"),
        (r"image_encoder\.layers\.(\d+)\.layer_norm([12])\.(\w+)", rf"{enc}.blocks.\1.norm\2.\3"),
        (r"image_encoder\.layers\.(\d+)\.attn\.(qkv|proj)\.(\w+)", rf"{enc}.blocks.\1.attn.\2.\3"),
        (r"image_encoder\.layers\.(\d+)\.attn\.(rel_pos_[hw])", rf"{enc}.blocks.\1.attn.\2"),
        (r"image_encoder\.layers\.(\d+)\.mlp\.(lin[12])\.(\w+)", rf"{enc}.blocks.\1.mlp.\2.\3"),
        (r"image_encoder\.neck\.conv1\.(\w+)", rf"{enc}.neck.0.\1"),
        (r"image_encoder\.neck\.layer_norm1\.(\w+)", rf"{enc}.neck.1.\1"),
        (r"image_encoder\.neck\.conv2\.(\w+)", rf"{enc}.neck.2.\1"),
        (r"image_encoder\.neck\.layer_norm2\.(\w+)", rf"{enc}.neck.3.\1"),
        # prompt encoder
        (
            r"prompt_encoder\.shared_embedding\.positional_embedding",
            f"{pe}.pe_layer.positional_encoding_gaussian_matrix",
        ),
        (r"prompt_encoder\.mask_embed\.conv1\.(\w+)", rf"{pe}.mask_downscaling.0.\1"),
        (r"prompt_encoder\.mask_embed\.layer_norm1\.(\w+)", rf"{pe}.mask_downscaling.1.\1"),
        (r"prompt_encoder\.mask_embed\.conv2\.(\w+)", rf"{pe}.mask_downscaling.3.\1"),
        (r"prompt_encoder\.mask_embed\.layer_norm2\.(\w+)", rf"{pe}.mask_downscaling.4.\1"),
        (r"prompt_encoder\.mask_embed\.conv3\.(\w+)", rf"{pe}.mask_downscaling.6.\1"),
        (r"prompt_encoder\.no_mask_embed\.weight", f"{pe}.no_mask_embed.weight"),
        (r"prompt_encoder\.not_a_point_embed\.weight", f"{pe}.not_a_point_embed.weight"),
        (r"prompt_encoder\.point_embed\.(\d+)\.weight", rf"{pe}.point_embeddings.\1.weight"),
        # mask decoder
        (r"mask_decoder\.(iou_token|mask_tokens)\.weight", rf"{dec}.\1.weight"),
        (
            r"mask_decoder\.transformer\.layers\.(\d+)\."
            r"(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)\.(q_proj|k_proj|v_proj|out_proj)\.(\w+)",
            rf"{dec}.transformer.layers.\1.\2.\3.\4",
        ),
        (
            r"mask_decoder\.transformer\.layers\.(\d+)\.mlp\.(lin[12])\.(\w+)",
            rf"{dec}.transformer.layers.\1.mlp.\2.\3",
        ),
        (
            r"mask_decoder\.transformer\.layers\.(\d+)\.layer_norm([1-4])\.(\w+)",
            rf"{dec}.transformer.layers.\1.norm\2.\3",
        ),
        (
            r"mask_decoder\.transformer\.final_attn_token_to_image\.(q_proj|k_proj|v_proj|out_proj)\.(\w+)",
            rf"{dec}.transformer.final_attn_token_to_image.\1.\2",
        ),
        (
            r"mask_decoder\.transformer\.layer_norm_final_attn\.(\w+)",
            rf"{dec}.transformer.norm_final_attn.\1",
        ),
        (r"mask_decoder\.upscale_conv1\.(\w+)", rf"{dec}.output_upscaling.0.\1"),
        (r"mask_decoder\.upscale_layer_norm\.(\w+)", rf"{dec}.output_upscaling.1.\1"),
        (r"mask_decoder\.upscale_conv2\.(\w+)", rf"{dec}.output_upscaling.3.\1"),
    ]
    for i in range(spec.num_multimask_outputs + 1):
        rules += _mlp_rule(
            rf"mask_decoder\.output_hypernetworks_mlps\.{i}", f"{dec}.output_hypernetworks_mlps.{i}", depth=3
        )
    rules += _mlp_rule(
        r"mask_decoder\.iou_prediction_head", f"{dec}.iou_prediction_head", spec.iou_head_depth
    )
    return rules


def _to_released_name(internal: str, rules: list[_Rule]) -> str:
    for pattern, repl in rules:
        match = re.fullmatch(pattern, internal)
        if match:
            return repl(match) if callable(repl) else match.expand(repl)
    raise KeyError(f"no released name known for SAM parameter '{internal}'")


def select_prefixed(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries whose key starts with `prefix`, with the prefix removed (e.g. RELEASED_SAM_PREFIX)."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


class ContactSam(nn.Module):
    """SAM for InteractVLM: encode V renders, decode them with one shared prompt of V view tokens."""

    def __init__(self, spec: SamSpec, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        self.spec = spec
        config = spec.to_hf_config(attn_implementation)
        self.image_encoder = SamImageEncoder(config.vision_config)
        self.prompt_encoder = SamPromptEncoder(config)
        self.mask_decoder = SamMaskDecoder(config.mask_decoder_config)
        rules = _internal_to_released_rules(spec)
        # internal name -> released name; built from the live module so every parameter is covered.
        self._released_names = {k: _to_released_name(k, rules) for k in self.state_dict()}
        if len(set(self._released_names.values())) != len(self._released_names):
            raise AssertionError("SAM key map is not one-to-one")

    # --- inference ---------------------------------------------------------------------------------------

    def encode_images(self, pixel_values: torch.Tensor, chunk_size: int = 1) -> torch.Tensor:
        """(V,3,S,S) normalised, padded images -> (V,C,S/16,S/16) embeddings (cacheable for fixed renders).

        Images go through `chunk_size` at a time: ViT-H's global-attention biases take ~1 GB per image in
        fp32, so one at a time keeps CPU memory bounded at no real cost on a GPU.
        """
        size = self.spec.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise InvalidInputError(
                f"SAM expects pixel values of shape (V,3,{size},{size}), got {tuple(pixel_values.shape)}; "
                "use sam_preprocess() to resize, normalise and pad."
            )
        if chunk_size < 1:
            raise InvalidInputError(f"chunk_size must be >= 1, got {chunk_size}")
        weight = self.image_encoder.pos_embed
        pixel_values = pixel_values.to(device=weight.device, dtype=weight.dtype)
        return torch.cat([self.image_encoder(chunk) for chunk in pixel_values.split(chunk_size)])

    def image_positional_embedding(self) -> torch.Tensor:
        """(1,C,g,g) random-Fourier PE of the embedding grid (the reference `get_dense_pe()`)."""
        pe_layer = self.prompt_encoder.shared_embedding
        gauss = pe_layer.positional_embedding
        g = self.spec.embedding_size
        centres = (torch.arange(g, device=gauss.device, dtype=gauss.dtype) + 0.5) / g
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        return pe_layer(torch.stack([x, y], dim=-1)).permute(2, 0, 1).unsqueeze(0)

    def prompt_embeddings(self, view_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse (1,T,C) = the view tokens themselves; dense (1,C,g,g) = `no_mask_embed` broadcast."""
        self._check_tokens(view_tokens)
        _, dense = self.prompt_encoder(None, None, None, None)
        return view_tokens.to(dense.dtype), dense

    def decode(
        self, image_embeddings: torch.Tensor, view_tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode V views with ONE prompt of T (normally V) view tokens that every view sees (spec 2.5).

        image_embeddings (V,C,g,g), view_tokens (1,T,C) -> low-res logits (V,1,4g,4g), IoU (V,1).
        Mask token 0 only (multimask_output=False), as InteractVLM does.
        """
        self._check_tokens(view_tokens)
        c, g = self.spec.prompt_embed_dim, self.spec.embedding_size
        if image_embeddings.ndim != 4 or tuple(image_embeddings.shape[1:]) != (c, g, g):
            raise InvalidInputError(
                f"image embeddings must be (V,{c},{g},{g}), got {tuple(image_embeddings.shape)}"
            )
        num_views = image_embeddings.shape[0]
        sparse, dense = self.prompt_embeddings(view_tokens)
        image_pe = self.image_positional_embedding().expand(num_views, -1, -1, -1)
        # transformers wants (image batch, point batch, tokens, C): each view gets the same T tokens.
        sparse = sparse.expand(num_views, -1, -1).unsqueeze(1)
        masks, iou = self.mask_decoder(
            image_embeddings=image_embeddings.to(dense.dtype),
            image_positional_embeddings=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return masks[:, 0], iou[:, 0]

    def postprocess(
        self, low_res: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """(V,1,h,w) low-res logits -> (V,H,W) float32 logits on the original image.

        Upsample to the padded SAM input size, crop the padding away, resize to the original size.
        """
        size = self.spec.image_size
        masks = F.interpolate(low_res.float(), (size, size), mode="bilinear", align_corners=False)
        masks = masks[..., : int(input_size[0]), : int(input_size[1])]
        masks = F.interpolate(
            masks, tuple(int(s) for s in original_size), mode="bilinear", align_corners=False
        )
        return masks[:, 0]

    # --- box prompts (plain Segment Anything use, e.g. the object mask for fitting) ------------------------

    def box_prompt_embeddings(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Box prompts exactly as official SAM embeds them: boxes (B,4) xyxy in SAM input pixels.

        Each corner is shifted to its pixel centre (+0.5), normalised by the padded input side S, encoded
        with the random-Fourier PE, and the top-left / bottom-right corners get point embeddings 2 / 3.
        Returns sparse (B,2,C) and dense (B,C,g,g) = `no_mask_embed` broadcast (no mask prompt).
        """
        weight = self.prompt_encoder.point_embed[2].weight
        # Coordinates stay float32 whatever the model dtype (as the official forward_with_coords): in
        # bf16, (x + 0.5) / 1024 would move a corner by several pixels.
        boxes = torch.as_tensor(boxes).to(device=weight.device, dtype=torch.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise InvalidInputError(f"boxes must be (B,4) xyxy, got {tuple(boxes.shape)}")
        if not torch.isfinite(boxes).all():
            raise InvalidInputError("boxes must hold finite coordinates")
        corners = (boxes + 0.5).reshape(-1, 2, 2) / self.spec.image_size  # (B,2,2) in [0,1]
        gauss = self.prompt_encoder.shared_embedding.positional_embedding.float()  # (2,C/2)
        angles = 2 * torch.pi * ((2 * corners - 1) @ gauss)
        fourier = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).to(weight.dtype)  # (B,2,C)
        corner_embeds = torch.cat([weight, self.prompt_encoder.point_embed[3].weight])  # (2,C)
        sparse = fourier + corner_embeds.unsqueeze(0)
        g = self.spec.embedding_size
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(boxes.shape[0], -1, g, g)
        return sparse, dense

    def segment_boxes(
        self,
        image_embedding: torch.Tensor,
        boxes: torch.Tensor,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
        multimask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One image, B box prompts (xyxy in SAM input pixels) -> best mask logits (B,H,W) f32, IoU (B,).

        The standard SAM decoder path, as the official `SamPredictor.predict_torch(boxes=...)`: each box is
        decoded on its own copy of the image embedding. With `multimask` the three ambiguity masks (tokens
        1..3) are predicted and the one with the highest predicted IoU kept; otherwise mask token 0.
        Logits are returned at `original_size` (threshold them at 0, SAM's mask_threshold).
        """
        c, g = self.spec.prompt_embed_dim, self.spec.embedding_size
        if image_embedding.ndim != 4 or tuple(image_embedding.shape) != (1, c, g, g):
            raise InvalidInputError(
                f"segment_boxes takes ONE image embedding (1,{c},{g},{g}), got {tuple(image_embedding.shape)}"
            )
        sparse, dense = self.box_prompt_embeddings(boxes)
        num_boxes = sparse.shape[0]
        if num_boxes == 0:
            raise InvalidInputError("segment_boxes needs at least one box")
        image_pe = self.image_positional_embedding().expand(num_boxes, -1, -1, -1)
        # transformers' decoder takes (images, prompts per image, tokens, C); one prompt per embedding copy
        # keeps the per-box dense embedding exact, like the official repeat_interleave over prompts.
        masks, iou = self.mask_decoder(
            image_embeddings=image_embedding.to(dense.dtype).expand(num_boxes, -1, -1, -1),
            image_positional_embeddings=image_pe,
            sparse_prompt_embeddings=sparse.unsqueeze(1),
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        masks, iou = masks[:, 0], iou[:, 0]  # (B,K,4g,4g), (B,K)
        best = iou.argmax(dim=1)
        rows = torch.arange(num_boxes, device=best.device)
        low_res = masks[rows, best].unsqueeze(1)
        return self.postprocess(low_res, input_size, original_size), iou[rows, best].float()

    def _check_tokens(self, view_tokens: torch.Tensor) -> None:
        c = self.spec.prompt_embed_dim
        if view_tokens.ndim != 3 or view_tokens.shape[0] != 1 or view_tokens.shape[2] != c:
            raise InvalidInputError(f"view tokens must be (1,T,{c}), got {tuple(view_tokens.shape)}")

    # --- checkpoints -------------------------------------------------------------------------------------

    def released_key_map(self) -> dict[str, str]:
        """Released name (without RELEASED_SAM_PREFIX) -> name in this module's state dict."""
        return {released: internal for internal, released in self._released_names.items()}

    def load_released_state_dict(self, state_dict: Mapping[str, torch.Tensor], assign: bool = False) -> None:
        """Load SAM weights named as in the release (keys WITHOUT 'model.visual_model.'); strict.

        Any unknown, missing or mis-shaped key raises CheckpointError listing them. `assign=True` adopts the
        given tensors (for modules built on the meta device).
        """
        key_map = self.released_key_map()
        unexpected = sorted(set(state_dict) - set(key_map))
        missing = sorted(set(key_map) - set(state_dict))
        own = self.state_dict()
        mismatched = [
            f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[key_map[k]].shape)}"
            for k in sorted(set(state_dict) & set(key_map))
            if tuple(state_dict[k].shape) != tuple(own[key_map[k]].shape)
        ]
        if unexpected or missing or mismatched:
            raise CheckpointError(
                "SAM weights do not match the released InteractVLM layout "
                f"(SamSpec image_size={self.spec.image_size}, embed={self.spec.encoder_embed_dim}, "
                f"depth={self.spec.encoder_depth}). Missing keys: {_shorten(missing)}. "
                f"Unexpected keys: {_shorten(unexpected)}. Shape mismatches: {_shorten(mismatched)}. "
                "Pass the SAM keys with the 'model.visual_model.' prefix removed, and a SamSpec that matches "
                "the checkpoint (SamSpec.vit_h() for the released models)."
            )
        self.load_state_dict({key_map[k]: v for k, v in state_dict.items()}, strict=True, assign=assign)

    def released_state_dict(self) -> dict[str, torch.Tensor]:
        """This SAM's weights under the released names (without the prefix); inverse of the loader."""
        return {self._released_names[k]: v.detach() for k, v in self.state_dict().items()}


def _shorten(items: list[str], limit: int = 12) -> str:
    if len(items) <= limit:
        return str(items)
    return f"{items[:limit]} ... ({len(items)} in all)"


def sam_preprocess(image_uint8_hwc: np.ndarray, spec: SamSpec) -> tuple[torch.Tensor, tuple[int, int]]:
    """RGB uint8 (H,W,3) -> ((3,S,S) float32 SAM input, resized (h,w) before padding).

    ResizeLongestSide as the reference: PIL bilinear, long side -> S, new side = int(old * scale + 0.5);
    then (x - mean) / std and zero padding at the bottom/right (padding after normalisation).
    """
    image = np.asarray(image_uint8_hwc)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidInputError(
            f"sam_preprocess expects an RGB uint8 (H,W,3) image, got {image.dtype} {tuple(image.shape)}"
        )
    old_h, old_w = image.shape[:2]
    size = spec.image_size
    scale = size / max(old_h, old_w)
    new_h, new_w = int(old_h * scale + 0.5), int(old_w * scale + 0.5)
    if (new_h, new_w) != (old_h, old_w):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    mean = torch.tensor(spec.pixel_mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(spec.pixel_std, dtype=torch.float32).view(3, 1, 1)
    chw = (torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1) - mean) / std
    padded = F.pad(chw, (0, size - new_w, 0, size - new_h))
    return padded, (new_h, new_w)
