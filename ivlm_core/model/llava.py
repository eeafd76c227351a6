"""The LLaVA-v1 half of InteractVLM: LLaMA + CLIP vision tower + single-Linear projector + text_hidden_fcs.

Written on `transformers`' own LlamaForCausalLM and CLIPVisionModel, whose parameter names already equal the
released checkpoint's (`model.layers.*`, `lm_head.*`), so only the projector and the fcs need their own
modules. Three greedy decoders live here: the static-cache one (`decoding.StaticDecoder`, CUDA-graph steps
on a GPU, the default), the eager `DynamicCache` one, and a naive one that re-runs CLIP and the
whole sequence at every step exactly like the reference `generate(use_cache=False)`; the naive one exists to
prove the fast one equivalent and to benchmark against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import CLIPVisionModel, DynamicCache, LlamaConfig, LlamaForCausalLM

from ivlm_core.errors import InvalidInputError
from ivlm_core.model.decoding import StaticDecoder
from ivlm_core.model.prompts import IMAGE_TOKEN_INDEX

DECODER_TEXT_TOKENS = 192
"""Text tokens (system prompt + question + object name) the static cache leaves room for next to the image."""
DECODER_MAX_NEW_TOKENS = 512
"""Answer tokens the static cache leaves room for (the reference's and the pipeline's upper limit)."""


def llama_config_from_checkpoint(cfg: dict) -> LlamaConfig:
    """A LlamaConfig with the sizes of the released LLaVA config.json (never hard-coded), SDPA attention."""
    return LlamaConfig(
        vocab_size=int(cfg["vocab_size"]),
        hidden_size=int(cfg["hidden_size"]),
        intermediate_size=int(cfg["intermediate_size"]),
        num_hidden_layers=int(cfg["num_hidden_layers"]),
        num_attention_heads=int(cfg["num_attention_heads"]),
        num_key_value_heads=int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]),
        hidden_act=cfg.get("hidden_act", "silu"),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rope_scaling=cfg.get("rope_scaling"),
        attention_bias=bool(cfg.get("attention_bias", False)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        bos_token_id=int(cfg.get("bos_token_id", 1)),
        eos_token_id=int(cfg.get("eos_token_id", 2)),
        pad_token_id=int(cfg.get("pad_token_id", 0)) if cfg.get("pad_token_id") is not None else None,
        use_cache=True,
        attn_implementation="sdpa",
    )


def make_text_hidden_fcs(hidden_size: int, out_dim: int) -> nn.ModuleList:
    """`text_hidden_fcs`: ModuleList([Linear(h,h), ReLU, Linear(h,out), Dropout(0)]); keys `0.0.*`/`0.2.*`."""
    return nn.ModuleList(
        [
            nn.Sequential(
                nn.Linear(hidden_size, hidden_size),
                nn.ReLU(),
                nn.Linear(hidden_size, out_dim),
                nn.Dropout(0.0),
            )
        ]
    )


@dataclass
class GenerationOutput:
    """Greedy answer of the LLM and the hidden state that feeds the mask decoder.

    `seg_hidden` is the final-norm state at the position *before* the first seg token ([SEG]/[HSEG]/[OSEG]),
    i.e. the state whose LM-head output emitted it (spec 2.4); None when no seg token was generated.
    """

    prompt_ids: list[int]
    generated_ids: list[int]
    seg_index: int | None
    seg_token_id: int | None
    seg_hidden: torch.Tensor | None
    prefill_s: float = 0.0
    decode_s: float = 0.0
    stop_reason: str = ""  # "mask" | "eos" | "length" (static decoder); "" where not tracked
    forwards: int = 0  # decode forwards after the prefill (static decoder)
    accepted_drafts: int = 0  # draft tokens the verify forwards accepted (draft-and-verify decoding)


def select_seg_state(
    last_hidden: torch.Tensor,
    prompt_ids: Sequence[int],
    generated: Sequence[int],
    seg_token_ids: Sequence[int],
) -> tuple[int | None, int | None, torch.Tensor | None]:
    """The reference mask arithmetic on the last decoding step's states (1, L_exp, H).

    ``m = isin(output_ids[1:], seg_ids)`` with `img_emb_len` False entries prepended selects the row just
    before each mask token in image-expanded coordinates. The first one is used (the multi-view decoder
    supports exactly one). Returns (index in `generated`, token id, state (1,H)) or Nones.
    """
    seg_set = {int(s) for s in seg_token_ids}
    output_ids = torch.tensor([int(i) for i in prompt_ids] + [int(i) for i in generated])
    mask = torch.isin(output_ids[1:], torch.tensor(sorted(seg_set)))
    img_emb_len = last_hidden.shape[1] - (len(output_ids) - 1)
    mask = torch.cat([torch.zeros(img_emb_len, dtype=torch.bool), mask])
    rows = torch.nonzero(mask).flatten().tolist()
    if not rows:
        return None, None, None
    pos = next(i for i, t in enumerate(generated) if int(t) in seg_set)
    return pos, int(generated[pos]), last_hidden[:, rows[0]].clone()


class LlavaModel(nn.Module):
    """LLaMA + CLIP tower (layer `select_layer`, patch tokens) + projector + text_hidden_fcs."""

    def __init__(
        self,
        llm: LlamaForCausalLM,
        vision_tower: CLIPVisionModel,
        mm_hidden_size: int,
        out_dim: int,
        select_layer: int = -2,
        select_feature: str = "patch",
    ):
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise InvalidInputError(f"Unsupported mm_vision_select_feature '{select_feature}'.")
        self.llm = llm
        self.vision_tower = vision_tower
        hidden = llm.config.hidden_size
        self.mm_projector = nn.Linear(mm_hidden_size, hidden)
        self.text_hidden_fcs = make_text_hidden_fcs(hidden, out_dim)
        self.select_layer = select_layer
        self.select_feature = select_feature
        for p in self.vision_tower.parameters():
            p.requires_grad_(False)
        self.decoder: StaticDecoder | None = None
        self.drafter = None
        """A `drafting.TemplateDrafter`: the static path then decodes by draft-and-verify (same answers)."""
        self.max_draft_tokens = 8
        self.decoder_compile = "auto"
        """`StaticDecoder` compile_mode of the decoders built from now on (fused_layers: auto = on CUDA)."""
        self.decoder_gemv = "auto"
        """`StaticDecoder` gemv_mode of the decoders built from now on (decode_kernels: auto = on CUDA)."""

    @property
    def hidden_size(self) -> int:
        return int(self.llm.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return self.mm_projector.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mm_projector.weight.dtype

    # ----------------------------------------------------------------------------------------- image side
    @torch.inference_mode()
    def clip_patch_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(1, P, mm_hidden): CLIP hidden_states[select_layer] without the CLS token."""
        tower_dtype = next(self.vision_tower.parameters()).dtype
        out = self.vision_tower(pixel_values.to(self.device, tower_dtype), output_hidden_states=True)
        feats = out.hidden_states[self.select_layer]
        if self.select_feature == "patch":
            feats = feats[:, 1:]
        return feats

    @torch.inference_mode()
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(1, P, hidden): projected patch features that replace the -200 placeholder."""
        return self.mm_projector(self.clip_patch_features(pixel_values).to(self.dtype))

    # ----------------------------------------------------------------------------------------- text side
    def embed(self, ids: Sequence[int], image_features: torch.Tensor | None) -> torch.Tensor:
        """(1, L', hidden) input embeddings; the -200 id (if any) is replaced by the P image embeddings."""
        ids_list = [int(i) for i in ids]
        table = self.llm.get_input_embeddings()
        pieces: list[torch.Tensor] = []
        start = 0
        for pos, tok in enumerate(ids_list):
            if tok == IMAGE_TOKEN_INDEX:
                if image_features is None:
                    raise InvalidInputError("The prompt has an <image> placeholder but no image features.")
                if pos > start:
                    pieces.append(table(torch.tensor(ids_list[start:pos], device=self.device)))
                pieces.append(image_features[0].to(table.weight.dtype))
                start = pos + 1
        if start < len(ids_list):
            pieces.append(table(torch.tensor(ids_list[start:], device=self.device)))
        return torch.cat(pieces, dim=0)[None]

    def final_hidden(self, inputs_embeds: torch.Tensor, cache: DynamicCache | None = None) -> torch.Tensor:
        """Final-norm last-layer states (1, L, hidden) (optionally extending a KV cache)."""
        out = self.llm.model(inputs_embeds=inputs_embeds, past_key_values=cache, use_cache=cache is not None)
        return out.last_hidden_state

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.llm.lm_head(hidden)

    @torch.inference_mode()
    def seg_embedding(self, seg_hidden: torch.Tensor) -> torch.Tensor:
        """`text_hidden_fcs` of the selected state: (1, hidden) -> (1, out_dim)."""
        return self.text_hidden_fcs[0](seg_hidden.to(self.dtype))

    # ----------------------------------------------------------------------------------------- decoding
    @torch.inference_mode()
    def generate_cached(
        self,
        prompt_ids: Sequence[int],
        pixel_values: torch.Tensor,
        seg_token_ids: Sequence[int],
        eos_token_id: int,
        max_new_tokens: int,
        stop_at_seg: bool = False,
    ) -> GenerationOutput:
        """Greedy decoding with a KV cache; the [SEG] state is the state of the step that emitted [SEG].

        That state is, by causality, the reference's row `pos([SEG]) - 1` of the full no-cache forward.
        `stop_at_seg` ends decoding at the first mask token: the mask needs nothing after it.
        """
        import time

        seg_ids = {int(s) for s in seg_token_ids}
        t0 = time.perf_counter()
        cache = DynamicCache()
        embeds = self.embed(prompt_ids, self.image_features(pixel_values))
        hidden = self.final_hidden(embeds, cache)[:, -1]
        generated: list[int] = []
        seg_index = seg_token = None
        seg_hidden = None
        table = self.llm.get_input_embeddings()
        prefill_s = 0.0
        for step in range(max_new_tokens):
            token = int(self.logits(hidden).argmax(dim=-1).item())
            if step == 0:
                prefill_s = time.perf_counter() - t0
            generated.append(token)
            if token in seg_ids and seg_index is None:
                seg_index, seg_token, seg_hidden = step, token, hidden.clone()
            if token == eos_token_id or step == max_new_tokens - 1 or (stop_at_seg and seg_index is not None):
                break
            next_embed = table(torch.tensor([[token]], device=self.device))
            hidden = self.final_hidden(next_embed, cache)[:, -1]
        total = time.perf_counter() - t0
        return GenerationOutput(
            list(prompt_ids),
            generated,
            seg_index,
            seg_token,
            seg_hidden,
            prefill_s=prefill_s,
            decode_s=total - prefill_s,
        )

    def ensure_decoder(
        self, seg_token_ids: Sequence[int], eos_token_id: int, prompt_len: int, max_new_tokens: int
    ) -> StaticDecoder:
        """The static-cache decoder, (re)built when the prompt or answer does not fit the cache it has.

        Sized for the image tokens + `DECODER_TEXT_TOKENS` + `DECODER_MAX_NEW_TOKENS` by default, so a
        rebuild (and, on CUDA, a re-capture) only happens for an unusually long object name.
        """
        dec = self.decoder
        seg = tuple(sorted({int(t) for t in seg_token_ids}))
        if (
            dec is not None
            and dec.max_prompt_len >= prompt_len
            and dec.max_new_tokens >= max_new_tokens
            and dec.seg_token_ids == seg
            and dec.eos_token_id == int(eos_token_id)
            and dec.compile_mode == self.decoder_compile
            and dec.gemv_mode == self.decoder_gemv
        ):
            return dec
        captured = dec.captured_batches if dec is not None else ()
        verify = dec.captured_verify if dec is not None else ()
        self.decoder = None  # free the old cache first
        patches = self.vision_tower.config.image_size // self.vision_tower.config.patch_size
        room = max(int(prompt_len), patches * patches + DECODER_TEXT_TOKENS)
        room = -(-room // 64) * 64
        new = max(int(max_new_tokens), DECODER_MAX_NEW_TOKENS)
        self.decoder = StaticDecoder(self.llm, seg, int(eos_token_id), room + new, new,
                                     compile_mode=self.decoder_compile, gemv_mode=self.decoder_gemv)
        if captured:
            import logging

            logging.getLogger(__name__).warning(
                "static KV cache grown to %d prompt tokens; re-capturing the CUDA graphs on this frame", room
            )
            self.decoder.capture(captured)
        for batch, k in verify:
            self.decoder.capture_verify((batch,), (k,))
        return self.decoder

    @torch.inference_mode()
    def generate_static(
        self,
        prompts: Sequence[Sequence[int]],
        pixel_values: torch.Tensor,
        seg_token_ids: Sequence[int],
        eos_token_id: int,
        max_new_tokens: int,
        stop_at_mask: bool = True,
    ) -> list[GenerationOutput]:
        """Greedy answers to 1 or 2 questions about ONE image (CLIP runs once), decoded as one batch with
        the static cache (CUDA-graph steps when captured). Stops each row at its first mask token when
        `stop_at_mask` (its state is all the mask decoder needs), else at EOS or `max_new_tokens`."""
        import time

        t0 = time.perf_counter()
        feats = self.image_features(pixel_values)
        embeds = [self.embed(ids, feats)[0] for ids in prompts]
        decoder = self.ensure_decoder(seg_token_ids, eos_token_id, max(e.shape[0] for e in embeds), max_new_tokens)
        clip_s = time.perf_counter() - t0
        if self.drafter is not None:
            drafter = self.drafter
            texts = [[int(i) for i in ids] for ids in prompts]

            def propose(row: int, answer: Sequence[int], k: int) -> list[int]:
                return drafter.propose(answer, k, texts[row])

            res = decoder.generate_drafted(embeds, max_new_tokens, propose, self.max_draft_tokens, stop_at_mask)
        else:
            res = decoder.generate(embeds, max_new_tokens, stop_at_mask=stop_at_mask)
        return [
            GenerationOutput(
                [int(i) for i in ids],
                res.generated[b],
                res.seg_index[b],
                res.seg_token[b],
                res.seg_hidden[b],
                prefill_s=clip_s + res.prefill_s,
                decode_s=res.decode_s,
                stop_reason=res.stop_reason[b],
                forwards=res.forwards,
                accepted_drafts=res.accepted,
            )
            for b, ids in enumerate(prompts)
        ]

    @torch.inference_mode()
    def generate_naive(
        self,
        prompt_ids: Sequence[int],
        pixel_values: torch.Tensor,
        seg_token_ids: Sequence[int],
        eos_token_id: int,
        max_new_tokens: int,
        stop_at_seg: bool = False,
    ) -> GenerationOutput:
        """The reference decoder: every step re-runs CLIP and a full forward over the whole sequence.

        The [SEG] state is then chosen with the reference mask arithmetic on the last step's states:
        ``m = isin(output_ids[1:], seg_ids)`` with `img_emb_len` False entries prepended.
        """
        import time

        t0 = time.perf_counter()
        seg_set = {int(s) for s in seg_token_ids}
        ids = [int(i) for i in prompt_ids]
        generated: list[int] = []
        last_hidden = None
        prefill_s = 0.0
        for step in range(max_new_tokens):
            feats = self.image_features(pixel_values)
            last_hidden = self.final_hidden(self.embed(ids + generated, feats))
            token = int(self.logits(last_hidden[:, -1]).argmax(dim=-1).item())
            if step == 0:
                prefill_s = time.perf_counter() - t0
            generated.append(token)
            if token == eos_token_id or (stop_at_seg and token in seg_set):
                break
        assert last_hidden is not None
        seg_index, seg_token, seg_hidden = select_seg_state(last_hidden, ids, generated, seg_token_ids)
        total = time.perf_counter() - t0
        return GenerationOutput(
            ids, generated, seg_index, seg_token, seg_hidden, prefill_s=prefill_s, decode_s=total - prefill_s
        )

    @torch.inference_mode()
    def teacher_forced(
        self,
        prompt_ids: Sequence[int],
        pixel_values: torch.Tensor,
        answer_ids: Sequence[int],
        seg_token_ids: Sequence[int],
    ) -> GenerationOutput:
        """A given answer instead of a generated one: one forward over prompt + answer[:-1], as the last
        step of the reference generate would see it, then the reference [SEG]-state selection."""
        import time

        t0 = time.perf_counter()
        ids = [int(i) for i in prompt_ids]
        answer = [int(i) for i in answer_ids]
        if not answer:
            raise InvalidInputError("teacher_forced needs a non-empty answer.")
        hidden = self.final_hidden(self.embed(ids + answer[:-1], self.image_features(pixel_values)))
        seg_index, seg_token, seg_hidden = select_seg_state(hidden, ids, answer, seg_token_ids)
        return GenerationOutput(
            ids, answer, seg_index, seg_token, seg_hidden, prefill_s=time.perf_counter() - t0
        )

    @torch.inference_mode()
    def forced_seg_state(
        self, prompt_ids: Sequence[int], pixel_values: torch.Tensor, seg_token_id: int
    ) -> GenerationOutput:
        """No generation: [SEG] appended to the prompt, one forward, the state before it (`simple`)."""
        import time

        t0 = time.perf_counter()
        ids = [int(i) for i in prompt_ids] + [int(seg_token_id)]
        hidden = self.final_hidden(self.embed(ids, self.image_features(pixel_values)))
        seg_hidden = hidden[:, -2].clone()
        return GenerationOutput(
            ids[:-1],
            [int(seg_token_id)],
            0,
            int(seg_token_id),
            seg_hidden,
            prefill_s=time.perf_counter() - t0,
        )
