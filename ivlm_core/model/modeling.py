"""InteractVLM modelling: the weights and the forward pieces (no tokenizer, no images on disk, no caches).

The photo goes only to the LLaVA branch; SAM sees fixed renders or, in the 2D model, the photo. The final-norm
LLM state before the generated mask token goes through `text_hidden_fcs`, is copied per view and multiplied by
the per-view camera encoding; the V resulting tokens form ONE prompt that SAM's decoder uses for every view
(spec 2.5, 8.3). What to ask and how to read the answer is `processing`; the task API is `predictor`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ivlm_core.errors import InvalidInputError
from ivlm_core.model.attention_splitter import AttentionSplitter
from ivlm_core.model.camera_encoder import ViV1CameraEncoder
from ivlm_core.model.llava import GenerationOutput, LlavaModel
from ivlm_core.model.sam import ContactSam


class InteractVLMModel(nn.Module):
    """LLaVA (LLM + CLIP + projector + text_hidden_fcs) + ContactSam + vi_v1 camera encoder [+ splitter]."""

    def __init__(
        self,
        config,
        llava: LlavaModel,
        sam: ContactSam,
        cam_encoder: ViV1CameraEncoder | None,
        splitter: AttentionSplitter | None,
    ) -> None:
        super().__init__()
        self.config = config
        self.llava = llava
        self.sam = sam
        self.cam_encoder = cam_encoder
        self.splitter = splitter

    @property
    def device(self) -> torch.device:
        return self.llava.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llava.dtype

    # ---------------------------------------------------------------------------------------- language
    @torch.inference_mode()
    def language_forward(
        self,
        prompt_ids: Sequence[int],
        pixel_values: torch.Tensor,
        *,
        eos_token_id: int,
        forced_token: int,
        generate: bool = True,
        naive: bool = False,
        max_new_tokens: int = 512,
        answer_ids: Sequence[int] | None = None,
        decoding: str = "static",
        stop_at_mask: bool = True,
    ) -> GenerationOutput:
        """The LLM on prompt + image: greedy generation (static-cache, eager KV-cached or naive; ending at the first
        mask token when `stop_at_mask`), a given answer (teacher forcing, the reference `forward` mode) or, with
        `generate=False`, `forced_token` appended to the prompt."""
        seg_ids = self.config.seg_token_ids
        if answer_ids is not None:
            return self.llava.teacher_forced(prompt_ids, pixel_values, answer_ids, seg_ids)
        if not generate:
            return self.llava.forced_seg_state(prompt_ids, pixel_values, forced_token)
        if naive:
            return self.llava.generate_naive(
                prompt_ids, pixel_values, seg_ids, eos_token_id, max_new_tokens, stop_at_seg=stop_at_mask
            )
        if decoding == "eager":
            return self.llava.generate_cached(
                prompt_ids, pixel_values, seg_ids, eos_token_id, max_new_tokens, stop_at_seg=stop_at_mask
            )
        return self.language_batch([prompt_ids], pixel_values, eos_token_id, max_new_tokens, stop_at_mask)[0]

    @torch.inference_mode()
    def language_batch(
        self,
        prompts: Sequence[Sequence[int]],
        pixel_values: torch.Tensor,
        eos_token_id: int,
        max_new_tokens: int = 512,
        stop_at_mask: bool = True,
    ) -> list[GenerationOutput]:
        """1-2 prompts about one image in one static-cache pass: CLIP once, right-padded rows, per-row stops."""
        return self.llava.generate_static(
            prompts, pixel_values, self.config.seg_token_ids, eos_token_id, max_new_tokens, stop_at_mask
        )

    # ---------------------------------------------------------------------------------------- SAM side
    @torch.inference_mode()
    def camera_encodings(self, cam_params: torch.Tensor) -> torch.Tensor | None:
        """(V, C) vi_v1 encodings of (V, 5) normalised camera parameters; None without a camera encoder."""
        if self.cam_encoder is None:
            return None
        return self.cam_encoder(cam_params.to(self.device, self.dtype))

    @torch.inference_mode()
    def encode_sam_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(V,3,S,S) normalised, padded SAM inputs -> (V,C,s,s) image embeddings."""
        return self.sam.encode_images(pixels.to(self.device, self.dtype))

    @torch.inference_mode()
    def view_tokens(
        self, seg_hidden: torch.Tensor, seg_token_id: int, cam_encodings: torch.Tensor | None, num_tokens: int
    ) -> torch.Tensor:
        """(1, T, C) SAM prompt: fcs([SEG] state) per view x camera encoding [-> splitter for HSEG/OSEG]."""
        emb = self.llava.seg_embedding(seg_hidden)  # (1, C)
        tokens = emb[:, None, :].expand(1, num_tokens, emb.shape[-1])
        if cam_encodings is not None:
            if cam_encodings.shape[0] != num_tokens:
                raise InvalidInputError(f"{cam_encodings.shape[0]} camera encodings for {num_tokens} tokens.")
            tokens = tokens * cam_encodings[None].to(tokens.dtype)
        if self.splitter is not None:
            human, obj = self.splitter(tokens)
            if seg_token_id == self.config.hseg_token_idx:
                tokens = human
            elif seg_token_id == self.config.oseg_token_idx:
                tokens = obj
        return tokens

    @torch.inference_mode()
    def decode_masks(
        self,
        image_embeddings: torch.Tensor,
        tokens: torch.Tensor,
        input_sizes: Sequence,
        original_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every view decoded with the shared prompt: (V,H,W) float32 logits, (V,1) IoU, (V,1,h,w) low-res."""
        low, iou = self.sam.decode(image_embeddings, tokens)
        logits = torch.cat(
            [self.sam.postprocess(low[v : v + 1], input_sizes[v], original_size) for v in range(low.shape[0])]
        )
        return logits, iou.float(), low


__all__ = ["InteractVLMModel"]
