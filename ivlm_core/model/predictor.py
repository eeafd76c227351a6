"""InteractVLM task API: one call per task (human / object / 2D contact), typed results.

Owns what a running robot keeps between frames: the SAM embeddings of the fixed human renders (computed once
per model), the camera encodings per view set, and the renders + embeddings of the last few object meshes.
Naive path (`naive=True`): the reference behaviour - CLIP and the whole sequence re-run per generated token,
SAM and camera encoder re-run per call - kept for equivalence tests and the latency benchmark.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.geometry.lifting import LiftingMaps, lift_human_legacy, lift_human_soft, lift_object_mesh
from ivlm_core.geometry.point_lifting import PointMaps, affordance_heat_maps, lift_point_heat
from ivlm_core.geometry.views import OBJECT_MESH_RENDER_DIST, cam_params_tensor, get_view_set
from ivlm_core.model.decoding import verify_buckets
from ivlm_core.model.llava import GenerationOutput
from ivlm_core.model.modeling import InteractVLMModel
from ivlm_core.model.processing import (
    DEFAULT_HUMAN_VIEW_SET,
    DEFAULT_OBJECT_VIEW_SET,
    EncoderCameras,
    HumanRenderAssets,
    InteractVLMProcessor,
    LanguageResult,
    ObjectRenderAssets,
    as_rgb,
    human_question_type,
    object_encoder_cameras,
    object_question_type,
    render_object_views,
)
from ivlm_core.model.prompts import (
    OAFFORD_AFFORD_ANSWERS,
    OAFFORD_AFFORD_OBJ_ANSWERS,
    human_2d_contact_question,
    human_contact_question,
    object_contact_question,
)

OBJECT_CACHE_SIZE = 8
"""Meshes whose renders and SAM embeddings the fast path keeps."""

HumanLifting = Literal["soft", "legacy"]


# ------------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class _AskOptions:
    """How one question is decoded; the three tasks pass these through unchanged."""

    generate: bool
    naive: bool
    max_new_tokens: int
    answer_ids: Sequence[int] | None
    stop_at_mask: bool


@dataclass
class MaskInternals:
    """What the mask decoder was given and gave, for debugging and parity (on request: `return_internals`)."""

    seg_hidden: np.ndarray  # (1, hidden) float32: final-norm LLM state that emitted the mask token
    seg_embedding: np.ndarray  # (1, C) float32: its `text_hidden_fcs` embedding
    view_tokens: np.ndarray  # (1, V, C) float32: the SAM prompt (embedding x camera encoding [-> splitter])
    low_res_masks: np.ndarray  # (V, 1, h, w) float32: SAM decoder output before post-processing


@dataclass
class NoContactFound:
    """The answer held no mask token ([SEG]/[HSEG]/[OSEG]), so there is no mask (not an error).

    `status` tells why: "no_contact" (the model answered without a mask token) or "truncated" (max_new_tokens
    cut the answer before any mask token: unknown, not "no contact").
    """

    task: str
    object_name: str
    language: LanguageResult
    timings: dict[str, float] = field(default_factory=dict)
    found: bool = False

    @property
    def status(self) -> str:
        return self.language.status

    @property
    def message(self) -> str:
        return self.language.message


@dataclass
class HumanContactResult:
    """3D human contact: per-view logits on the body renders and per-vertex contact probabilities."""

    object_name: str
    language: LanguageResult
    view_names: tuple[str, ...]
    view_logits: np.ndarray  # (V,H,W) float32 mask logits
    iou: np.ndarray  # (V,) float32 SAM IoU predictions
    contacts_smplh: np.ndarray  # (6890,) float32 in [0,1] (N of the lifting maps)
    contacts_smplx: np.ndarray | None  # (10475,) float32 when a ContactTransfer is set
    timings: dict[str, float] = field(default_factory=dict)
    found: bool = True
    internals: MaskInternals | None = None
    status: str = "contact"


@dataclass
class ObjectContactResult:
    """Object contact/affordance on the given mesh, in its vertex order."""

    object_name: str
    language: LanguageResult
    view_names: tuple[str, ...]
    renders: np.ndarray  # (V,H,W,3) uint8, the SAM inputs
    view_logits: np.ndarray  # (V,H,W) float32
    iou: np.ndarray  # (V,)
    contacts: np.ndarray  # (N,) float32: 0 or >= 0.3 (reference object lifter)
    timings: dict[str, float] = field(default_factory=dict)
    found: bool = True
    internals: MaskInternals | None = None
    status: str = "contact"


@dataclass
class PointAffordanceResult:
    """Object affordance on a point cloud (PIAD protocol): per-view heat maps and per-point affordance."""

    object_name: str
    language: LanguageResult
    view_names: tuple[str, ...]
    heat_maps: np.ndarray  # (V,H,W) float32: sigmoid of the logits on rendered pixels (reference rule)
    iou: np.ndarray  # (V,)
    affordance: np.ndarray  # (N,) float32 in [0,1] on points seen in some view, 0 on the others
    timings: dict[str, float] = field(default_factory=dict)
    found: bool = True
    status: str = "contact"


@dataclass
class Contact2DResult:
    """2D human contact segmentation on the photo itself (model interactvlm-2d-hcontact)."""

    object_name: str
    language: LanguageResult
    logits: np.ndarray  # (H,W) float32 at the photo's resolution
    iou: float
    timings: dict[str, float] = field(default_factory=dict)
    found: bool = True
    internals: MaskInternals | None = None
    status: str = "contact"


# ------------------------------------------------------------------------------------------------ predictor
class InteractVLMPredictor:
    """A loaded InteractVLM (`model`) with its `processor`, render assets and per-model caches."""

    def __init__(
        self,
        model: InteractVLMModel,
        processor: InteractVLMProcessor,
        human_assets: HumanRenderAssets | None = None,
        contact_transfer=None,
        object_render_dist: float = OBJECT_MESH_RENDER_DIST,
        object_cam_distance: float | None = None,
        object_render_size: int = 1024,
        human_lifting: HumanLifting = "soft",
        question_type: str | None = None,
    ) -> None:
        """`object_cam_distance` overrides the encoder cameras of the object views (default: per checkpoint,
        `object_encoder_cameras`); `question_type` overrides the checkpoint's human question type."""
        self.model = model
        self.processor = processor
        self.contact_transfer = contact_transfer
        self.object_render_dist = float(object_render_dist)
        self.object_render_size = int(object_render_size)
        self.encoder_cameras: EncoderCameras = object_encoder_cameras(model.config, object_cam_distance)
        self.question_type = human_question_type(model.config, question_type)
        if human_lifting not in ("soft", "legacy"):
            raise InvalidInputError(f"human_lifting must be 'soft' or 'legacy', got '{human_lifting}'.")
        self.human_lifting = human_lifting
        self.checkpoint_dir: Path | None = None
        self.clip_dir: Path | None = None
        self._human_assets: HumanRenderAssets | None = None
        self._human_embeddings: torch.Tensor | None = None
        self._human_sizes: list[tuple[int, int]] = []
        self._cam_cache: dict[tuple, torch.Tensor] = {}
        self._object_cache: OrderedDict[tuple, tuple] = OrderedDict()
        self.decoding: Literal["static", "eager"] = "static"
        """Fast-path decoder: the static-cache one (CUDA graphs once `warm_up` ran) or the eager DynamicCache."""
        if human_assets is not None:
            self.set_human_assets(human_assets)

    # ---------------------------------------------------------------------------------------- properties
    @property
    def config(self):
        return self.model.config

    @property
    def token_ids(self):
        return self.processor.token_ids

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def human_view_set(self) -> str:
        return self.config.hC_sam_view_type or DEFAULT_HUMAN_VIEW_SET

    @property
    def object_view_set(self) -> str:
        return self.config.oC_sam_view_type or DEFAULT_OBJECT_VIEW_SET

    @property
    def human_assets(self) -> HumanRenderAssets | None:
        return self._human_assets

    def set_human_assets(self, assets: HumanRenderAssets) -> None:
        """Use these renders/maps for the human task; their SAM embeddings are computed on first use."""
        self._human_assets = assets
        self._human_embeddings = None

    def prepare(self, warm_up: bool = True) -> None:
        """Precompute what the fast path reuses (the pipeline calls this at load, so none of it lands on the
        first frame): the SAM embeddings of the human renders and their valid lifting pixels on the device,
        the camera encodings of the human and object views, and (`warm_up`) the static decoder with its
        CUDA graphs captured for 1 and 2 rows."""
        if self._human_assets is not None:
            self.human_image_embeddings()
            self._human_assets.maps.valid_pixels(self.device)
        cam_encoder = self.model.cam_encoder
        for params in (cam_params_tensor(get_view_set(self.human_view_set)), self.object_camera_params()):
            if cam_encoder is not None and cam_encoder.num_views == len(params):
                self.camera_encodings(params)
        if warm_up:
            self.warm_up()

    def object_camera_params(self) -> np.ndarray:
        """(V, 5) normalised cameras the encoder sees for the object views (`encoder_cameras`)."""
        return self.encoder_cameras.params(self.object_view_set)

    def set_drafting(self, enabled: bool, max_draft_tokens: int = 8, body_parts: Sequence[str] | None = None) -> None:
        """Draft-and-verify decoding from the answer templates (same answers, fewer forwards): a token trie of
        every template answer in this checkpoint's tokenizer, with `body_parts` (the names of the user's
        smpl_segmentation_merged.pkl) in the part slot; without them that slot is drafted by prompt lookup."""
        llava = self.model.llava
        if not enabled:
            llava.drafter = None
            return
        from ivlm_core.model.drafting import TemplateDrafter

        if not 1 <= int(max_draft_tokens) <= 32:
            raise InvalidInputError(f"max_draft_tokens must be in [1, 32], got {max_draft_tokens}")
        llava.drafter = TemplateDrafter.for_model(
            self.processor.prompt_tokenizer, self.config.token_type, self.token_ids.eos, body_parts
        )
        llava.max_draft_tokens = int(max_draft_tokens)
        decoder = llava.decoder
        if decoder is not None and decoder.captured_batches:  # warmed up on CUDA: the verify graphs too, now
            with torch.inference_mode():
                decoder.capture_verify(decoder.captured_batches, verify_buckets(llava.max_draft_tokens))

    def set_decoder_compile(self, mode: str) -> None:
        """'auto' (compile the static decoder's layer glue on CUDA), 'on' or 'off'. On an H200 compiling takes
        ~20 s of warm-up and a 13B decode step from 10.6 to 8.5 ms. Best called before `prepare()`; a decoder
        already built with another mode is replaced and warmed up at once."""
        from ivlm_core.model.fused_layers import resolve_compile

        resolve_compile(mode, torch.device("cpu"))  # validates the name
        self.model.llava.decoder_compile = mode
        self._rebuild_decoder_unless(lambda dec: dec.compile_mode == mode)

    def set_decoder_gemv(self, mode: str) -> None:
        """'auto' (Triton decode kernels on CUDA, used only if the warm-up's captured step agrees with cuBLAS's
        and is faster), 'on' (wherever they run, if they agree; an error where they cannot) or 'off'. Best
        called before `prepare()`; a decoder already built with another mode is replaced and warmed up at once."""
        from ivlm_core.model.fused_layers import resolve_gemv

        resolve_gemv(mode, self.model.llava.device)  # validates the name, and 'on' where it cannot run
        self.model.llava.decoder_gemv = mode
        self._rebuild_decoder_unless(lambda dec: dec.gemv_mode == mode)

    def _rebuild_decoder_unless(self, still_fits) -> None:
        llava = self.model.llava
        if llava.decoder is not None and not still_fits(llava.decoder):
            llava.decoder = None
            self.warm_up()  # the replacement is built (and on CUDA captured) now, not on the next frame

    def decoder_summary(self) -> str:
        """How the LLM decodes, in one line for logs and diagnostics: graphs, compiled glue, which kernels run
        the matrix products (and the warm-up's timings that chose them), drafting."""
        llava = self.model.llava
        if self.decoding != "static":
            return f"{self.decoding} decoder"
        dec = llava.decoder
        if dec is None:
            return "static decoder, not built yet"
        kernels = dec.kernels
        graphs = f"CUDA graphs for batch {list(dec.captured_batches)}" if dec.captured_batches else "eager steps"
        glue = "layer glue compiled" if kernels.compiled else "layer glue eager"
        if kernels.failure:
            glue += f" (compiling failed: {kernels.failure[:120]})"
        products = "cuBLAS products" if dec.device.type == "cuda" else "CPU products"
        if kernels.gemv:
            products = "Triton kernels" + (" (programmatic dependent launch)" if kernels.pdl else "")
        choice = dec.gemv_choice
        if choice is not None:
            steps = ", ".join(f"{name} {ms:.2f} ms" for name, ms in choice["step_ms"].items())
            agree = ", ".join(f"{name} {cos:.4f}" for name, cos in choice["agreement"].items())
            products += f" (warm-up steps: {steps}; state cosine against cuBLAS: {agree})"
        if kernels.gemv_failure:
            products += f" (failed: {kernels.gemv_failure[:160]})"
        parts = [graphs, glue, products]
        if llava.drafter is not None:
            parts.append(f"draft-and-verify K={llava.max_draft_tokens}")
        return "; ".join(parts)

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Build the static decoder for the longest task prompt, capture its CUDA graphs (batch 1 and 2; with
        drafting also the verify forward per K bucket) and run one 2-row answer through it so every kernel
        and workspace exists before the first frame."""
        if self.decoding != "static":
            return
        llava = self.model.llava
        name = "x" * 64  # a long object name: the cache then fits any usual one without a rebuild
        questions = [human_contact_question(name, "parts"), object_contact_question(name, "afford")]
        prompt_len = max(len(self.processor.prompt_ids(q)) for q in questions)
        patches = llava.vision_tower.config.image_size // llava.vision_tower.config.patch_size
        decoder = llava.ensure_decoder(self.config.seg_token_ids, self.token_ids.eos, prompt_len + patches**2, 512)
        decoder.capture((1, 2))
        if llava.drafter is not None:
            k = llava.max_draft_tokens
            decoder.capture_verify((1, 2), verify_buckets(k))
        size = int(llava.vision_tower.config.image_size)
        photo = np.zeros((size, size, 3), np.uint8)
        self.run_language_batch(photo, questions[:1], max_new_tokens=2)
        self.run_language_batch(photo, questions, max_new_tokens=2)

    @torch.inference_mode()
    def prepare_object(self, vertices: np.ndarray, faces: np.ndarray, render_size: int | None = None) -> None:
        """Render a library mesh and cache its SAM embeddings and on-device lifting pixels now, not on the
        first frame that asks about it (meshes not prepared are cached the first time they are seen)."""
        self._object_inputs(vertices, faces, render_size, naive=False)

    # ---------------------------------------------------------------------------------------- language
    @torch.inference_mode()
    def run_language(
        self,
        image: np.ndarray,
        question: str,
        generate: bool = True,
        naive: bool = False,
        max_new_tokens: int = 512,
        forced_token: int | None = None,
        pixel_values: torch.Tensor | None = None,
        answer_ids: Sequence[int] | None = None,
        stop_at_mask: bool = True,
    ) -> tuple[LanguageResult, GenerationOutput]:
        """Ask `question` about the photo; returns the parsed answer and the [SEG]-state generation output.

        `answer_ids` replaces generation by a given answer (teacher forcing, the reference `forward` mode).
        Generation ends at the first mask token unless `stop_at_mask` is False (then at EOS, as the reference).
        """
        prompt = self.processor.build_prompt(question)
        ids = self.processor.prompt_tokenizer.encode_with_image(prompt)
        if pixel_values is None:
            pixel_values = self.processor.preprocess_image(image)
        out = self.model.language_forward(
            ids,
            pixel_values,
            eos_token_id=self.token_ids.eos,
            forced_token=forced_token if forced_token is not None else self.token_ids.seg,
            generate=generate,
            naive=naive,
            max_new_tokens=max_new_tokens,
            answer_ids=answer_ids,
            decoding=self.decoding,
            stop_at_mask=stop_at_mask,
        )
        generated = generate and answer_ids is None
        return self.processor.decode_answer(prompt, out, max_new_tokens if generated else None), out

    @torch.inference_mode()
    def run_language_batch(
        self, image: np.ndarray, questions: Sequence[str], max_new_tokens: int = 512, stop_at_mask: bool = True
    ) -> list[tuple[LanguageResult, GenerationOutput]]:
        """1-2 questions about one photo in one pass: CLIP once, the prompts decoded as one static-cache
        batch (right-padded, per-row stops, mask-token states and answer statuses)."""
        pixel_values = self.processor.preprocess_image(image)
        prompts = [self.processor.build_prompt(q) for q in questions]
        ids = [self.processor.prompt_tokenizer.encode_with_image(p) for p in prompts]
        outs = self.model.language_batch(ids, pixel_values, self.token_ids.eos, max_new_tokens, stop_at_mask)
        return [(self.processor.decode_answer(p, o, max_new_tokens), o) for p, o in zip(prompts, outs)]

    # ---------------------------------------------------------------------------------------- SAM side
    @torch.inference_mode()
    def camera_encodings(self, cam_params: np.ndarray, cache: bool = True) -> torch.Tensor | None:
        """(V, C) vi_v1 encodings of the normalised cameras (constants per view set, so cached)."""
        if self.model.cam_encoder is None:
            return None
        key = tuple(np.asarray(cam_params, dtype=np.float32).round(7).flatten().tolist())
        if cache and key in self._cam_cache:
            return self._cam_cache[key]
        enc = self.model.camera_encodings(torch.as_tensor(np.asarray(cam_params, dtype=np.float32)))
        if cache:
            self._cam_cache[key] = enc
        return enc

    @torch.inference_mode()
    def encode_sam_images(self, images: np.ndarray) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        pixels, sizes = self.processor.sam_inputs(images)
        return self.model.encode_sam_images(pixels), sizes

    def human_image_embeddings(self, cache: bool = True) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """SAM embeddings of the fixed human renders, computed once per model (fast path)."""
        assets = self._require_human_assets()
        if cache and self._human_embeddings is not None:
            return self._human_embeddings, self._human_sizes
        emb, sizes = self.encode_sam_images(assets.renders)
        if cache:
            self._human_embeddings, self._human_sizes = emb, sizes
        return emb, sizes

    # ---------------------------------------------------------------------------------------- tasks
    def _require_human_assets(self) -> HumanRenderAssets:
        if self._human_assets is None:
            raise MissingAssetError(
                "Human renders and lifting maps (data/hcontact_vitruvian)",
                Path("data/hcontact_vitruvian"),
                "Load them with HumanRenderAssets.from_reference_folder(<data dir>) or render them with "
                "HumanRenderAssets.render_vitruvian(<SMPL-H model dir>) and call set_human_assets().",
            )
        return self._human_assets

    def _human_template(self, template: str | None) -> str:
        """'parts' or 'simple'; default the predictor's `question_type` (the checkpoint's unless overridden)."""
        return human_question_type(self.config, template) if template else self.question_type

    def _object_template(self, template: str | None) -> str:
        """'afford' (affordance model) or 'contact' (PICO-trained; joint model); default from the checkpoint."""
        return object_question_type(self.config, template)

    def _ask(
        self,
        image: np.ndarray,
        question: str,
        task: str,
        object_name: str,
        human: bool,
        options: _AskOptions,
        t0: float,
    ) -> tuple[LanguageResult, GenerationOutput, dict[str, float]] | NoContactFound:
        """Ask one task's question; a typed NoContactFound (no_contact or truncated) without a mask token."""
        lang, out = self.run_language(
            image,
            question,
            generate=options.generate,
            naive=options.naive,
            max_new_tokens=options.max_new_tokens,
            forced_token=self.processor.mask_token_for(human=human),
            answer_ids=options.answer_ids,
            stop_at_mask=options.stop_at_mask,
        )
        timings = {"prefill_s": out.prefill_s, "decode_s": out.decode_s, "decode_forwards": float(out.forwards)}
        if out.seg_hidden is None:
            timings["total_s"] = time.perf_counter() - t0
            return NoContactFound(task, object_name, lang, timings)
        return lang, out, timings

    def _decode(
        self, out: GenerationOutput, embeddings: torch.Tensor, sizes: Sequence, enc: torch.Tensor | None,
        num_tokens: int, original_size: tuple[int, int], internals: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, MaskInternals | None]:
        tokens = self.model.view_tokens(out.seg_hidden, out.seg_token_id, enc, num_tokens=num_tokens)
        logits, iou, low = self.model.decode_masks(embeddings, tokens, sizes, original_size)
        kept = None
        if internals:
            kept = MaskInternals(
                seg_hidden=out.seg_hidden.float().cpu().numpy(),
                seg_embedding=self.model.llava.seg_embedding(out.seg_hidden).float().cpu().numpy(),
                view_tokens=tokens.float().cpu().numpy(),
                low_res_masks=low.float().cpu().numpy(),
            )
        return logits, iou, kept

    @torch.inference_mode()
    def predict_human_contact(
        self,
        image: np.ndarray,
        object_name: str,
        template: str | None = None,
        generate: bool = True,
        naive: bool = False,
        max_new_tokens: int = 512,
        answer_ids: Sequence[int] | None = None,
        stop_at_mask: bool = True,
        return_internals: bool = False,
    ) -> HumanContactResult | NoContactFound:
        """3D human contact with `object_name` ('scene' = ground) in the photo.

        template 'parts' or 'simple' (default: the predictor's `question_type`, i.e. the checkpoint's
        `hC_question_type` unless overridden); `generate=False` appends the mask token to the prompt and runs one
        forward (only meaningful for 'simple'). `return_internals` keeps the mask-token state, its embedding,
        the SAM prompt and the low-resolution masks on the result.
        """
        t0 = time.perf_counter()
        template = self._human_template(template)
        if not generate and template != "simple":
            raise InvalidInputError(
                "generate=False appends the mask token right after the question, which "
                "matches training only for the 'simple' template."
            )
        self._require_human_assets()  # fail before the LLM runs
        asked = self._ask(
            image,
            human_contact_question(object_name, template),
            "human_contact",
            object_name,
            True,
            _AskOptions(generate, naive, max_new_tokens, answer_ids, stop_at_mask),
            t0,
        )
        if isinstance(asked, NoContactFound):
            return asked
        lang, out, timings = asked
        return self._human_masks(object_name, lang, out, timings, t0, naive, return_internals)

    def _human_masks(
        self,
        object_name: str,
        lang: LanguageResult,
        out: GenerationOutput,
        timings: dict[str, float],
        t0: float,
        naive: bool,
        return_internals: bool = False,
    ) -> HumanContactResult:
        """SAM on the body renders with the answer's mask-token state, lifted to the body's vertices."""
        assets = self._require_human_assets()
        t1 = time.perf_counter()
        views = get_view_set(self.human_view_set)
        embeddings, sizes = self.human_image_embeddings(cache=not naive)
        enc = self.camera_encodings(cam_params_tensor(views), cache=not naive)
        logits, iou, internals = self._decode(
            out, embeddings, sizes, enc, len(views), assets.maps.resolution, return_internals
        )
        t2 = time.perf_counter()
        lift = lift_human_soft if self.human_lifting == "soft" else lift_human_legacy
        contacts = lift(logits[None].float(), assets.maps)[0]  # maps cache their valid pixels per device
        smplh = contacts.cpu().numpy().astype(np.float32)
        smplx = None
        if self.contact_transfer is not None and smplh.shape[0] == int(self.contact_transfer.num_source):
            smplx = np.asarray(self.contact_transfer.apply(smplh), dtype=np.float32)
        t3 = time.perf_counter()
        timings.update({"sam_s": t2 - t1, "lift_s": t3 - t2, "total_s": t3 - t0})
        return HumanContactResult(
            object_name,
            lang,
            assets.view_names,
            logits.cpu().numpy(),
            iou[:, 0].cpu().numpy(),
            smplh,
            smplx,
            timings,
            internals=internals,
        )

    def render_object(
        self, vertices: np.ndarray, faces: np.ndarray, image_size: int | None = None
    ) -> ObjectRenderAssets:
        """Normalise the mesh and render it xyz-coloured in the 4 object views at `object_render_dist`."""
        return render_object_views(
            vertices, faces, self.object_view_set, self.object_render_dist, image_size or self.object_render_size
        )

    def _object_key(self, vertices: np.ndarray, faces: np.ndarray, render_size: int | None) -> tuple:
        verts = np.ascontiguousarray(vertices, dtype=np.float64)
        tris = np.ascontiguousarray(faces, dtype=np.int64)
        return (
            hashlib.sha1(verts.tobytes() + tris.tobytes()).hexdigest(),
            verts.shape,
            tris.shape,
            int(render_size or self.object_render_size),
            self.object_render_dist,
            self.object_view_set,
        )

    def _cache_object(self, key: tuple, entry: tuple) -> None:
        entry[0].maps.valid_pixels(self.device)  # filled once per mesh, on the device the logits will be on
        self._object_cache[key] = entry
        while len(self._object_cache) > OBJECT_CACHE_SIZE:
            self._object_cache.popitem(last=False)

    def _object_inputs(self, vertices: np.ndarray, faces: np.ndarray, render_size: int | None, naive: bool):
        """Renders, lifting maps and SAM embeddings of a mesh; the fast path keeps the last few meshes
        (a robot sees the same objects frame after frame), the naive path recomputes them."""
        key = self._object_key(vertices, faces, render_size)
        if not naive and key in self._object_cache:
            self._object_cache.move_to_end(key)
            return self._object_cache[key]
        assets = self.render_object(vertices, faces, key[3])
        embeddings, sizes = self.encode_sam_images(assets.renders)
        entry = (assets, embeddings, sizes)
        if not naive:
            self._cache_object(key, entry)
        return entry

    @torch.inference_mode()
    def set_object_renders(
        self,
        vertices: np.ndarray,
        faces: np.ndarray,
        renders: np.ndarray,
        maps: LiftingMaps,
        render_size: int | None = None,
    ) -> None:
        """Use given renders (V,H,W,3) uint8 in the object views and their lifting maps for this mesh instead
        of rendering it (pre-rendered object data, or a machine without the rasterizer's numba)."""
        names = tuple(v.name for v in get_view_set(self.object_view_set, dist=self.object_render_dist))
        renders = np.asarray(renders)
        if renders.ndim != 4 or renders.dtype != np.uint8 or renders.shape[0] != len(names):
            raise InvalidInputError(f"renders must be ({len(names)},H,W,3) uint8, got {renders.dtype} {renders.shape}")
        if maps.num_views != len(names) or maps.num_vertices != len(vertices):
            raise InvalidInputError(
                f"lifting maps for {maps.num_views} views / {maps.num_vertices} vertices do not fit "
                f"{len(names)} views and a mesh of {len(vertices)} vertices"
            )
        assets = ObjectRenderAssets.from_arrays(names, renders, maps, "given renders")
        embeddings, sizes = self.encode_sam_images(assets.renders)
        self._cache_object(self._object_key(vertices, faces, render_size), (assets, embeddings, sizes))

    @torch.inference_mode()
    def predict_object_contact(
        self,
        image: np.ndarray,
        object_name: str,
        vertices: np.ndarray | None = None,
        faces: np.ndarray | None = None,
        template: str | None = None,
        generate: bool = True,
        naive: bool = False,
        max_new_tokens: int = 512,
        render_size: int | None = None,
        answer_ids: Sequence[int] | None = None,
        object_assets: ObjectRenderAssets | None = None,
        stop_at_mask: bool = True,
        return_internals: bool = False,
    ) -> ObjectContactResult | NoContactFound:
        """Object contact/affordance for the photo, on a mesh (vertices (N,3), faces (F,3)) that ivlm renders,
        or on ready-made renders + maps as the reference demo consumes them (`object_assets`, e.g.
        `ObjectRenderAssets.from_reference_folder(<sample>/sam_inp_objs)` with its lift2d_dict.pkl).

        template 'afford' (affordance model) or 'contact' (PICO-trained; default for the joint model); default
        from the checkpoint. Renders at `object_render_dist` (1.5, as the reference); the camera encoder sees
        `encoder_cameras` (per checkpoint: 2.0 for the affordance model, 1.5 for PICO-trained contact).
        """
        t0 = time.perf_counter()
        if (object_assets is None) == (vertices is None or faces is None):
            raise InvalidInputError(
                "predict_object_contact needs either the mesh (vertices and faces) or ready-made object_assets "
                "(renders + lifting maps), not both and not neither."
            )
        if object_assets is not None and len(object_assets.view_names) != len(get_view_set(self.object_view_set)):
            raise InvalidInputError(
                f"{len(object_assets.view_names)} object renders given; the view set {self.object_view_set} has "
                f"{len(get_view_set(self.object_view_set))} views."
            )
        template = self._object_template(template)
        if not generate and template != "contact":
            raise InvalidInputError("generate=False is only meaningful for the 'contact' object template.")
        asked = self._ask(
            image,
            object_contact_question(object_name, template),
            "object_contact",
            object_name,
            False,
            _AskOptions(generate, naive, max_new_tokens, answer_ids, stop_at_mask),
            t0,
        )
        if isinstance(asked, NoContactFound):
            return asked
        lang, out, timings = asked
        return self._object_masks(
            object_name, lang, out, timings, t0, vertices, faces, render_size, naive, object_assets, return_internals
        )

    def _object_masks(
        self,
        object_name: str,
        lang: LanguageResult,
        out: GenerationOutput,
        timings: dict[str, float],
        t0: float,
        vertices: np.ndarray,
        faces: np.ndarray,
        render_size: int | None,
        naive: bool,
        object_assets: ObjectRenderAssets | None = None,
        return_internals: bool = False,
    ) -> ObjectContactResult:
        """SAM on the mesh's renders (cached per mesh) with the mask-token state, lifted to its vertices."""
        t1 = time.perf_counter()
        if object_assets is None:
            assets, embeddings, sizes = self._object_inputs(vertices, faces, render_size, naive)
        else:
            assets = object_assets
            embeddings, sizes = self.encode_sam_images(assets.renders)
        t2 = time.perf_counter()
        enc = self.camera_encodings(self.object_camera_params(), cache=not naive)
        logits, iou, internals = self._decode(
            out, embeddings, sizes, enc, len(assets.view_names), assets.maps.resolution, return_internals
        )
        t3 = time.perf_counter()
        contacts = lift_object_mesh(logits[None].float(), assets.maps)[0]  # valid pixels cached on the device per mesh
        timings.update(
            {
                "render_s": t2 - t1,
                "sam_s": t3 - t2,
                "lift_s": time.perf_counter() - t3,
                "total_s": time.perf_counter() - t0,
            }
        )
        return ObjectContactResult(
            object_name,
            lang,
            assets.view_names,
            assets.renders,
            logits.cpu().numpy(),
            iou[:, 0].cpu().numpy(),
            contacts.cpu().numpy().astype(np.float32),
            timings,
            internals=internals,
        )

    def affordance_answer_ids(self, affordance: str, object_name: str) -> list[int]:
        """Token ids of the reference's first affordance answer for `affordance` (its 'afford_obj' variant, which
        also names the object, for checkpoints trained with that question type), with this checkpoint's object
        mask token: the teacher-forced answer of the reference's `forward` evaluation path."""
        token = self.processor.token_name(self.processor.mask_token_for(human=False))
        obj = self.config.oC_question_type == "afford_obj"
        templates = OAFFORD_AFFORD_OBJ_ANSWERS if obj else OAFFORD_AFFORD_ANSWERS
        answer = templates[0].format(affordance=affordance, class_name=object_name, TOKEN=token)
        tokenizer = self.processor.prompt_tokenizer
        full = tokenizer.encode("ASSISTANT: " + answer, add_bos=False)
        return full[len(tokenizer.encode("ASSISTANT:", add_bos=False)) :]

    @torch.inference_mode()
    def predict_point_affordance(
        self,
        image: np.ndarray,
        object_name: str,
        renders: np.ndarray,
        maps: PointMaps,
        template: str | None = None,
        answer_affordance: str | None = None,
        cam_distance: float = 2.0,
        max_new_tokens: int = 512,
        stop_at_mask: bool = True,
    ) -> PointAffordanceResult | NoContactFound:
        """Affordance of `object_name` in the photo on a point cloud given as SAM input renders (V,H,W,3) uint8
        of the object views and their pixel->point maps (the PIAD evaluation protocol, spec 3.3).

        The question is the first 'afford' one unless `template` says otherwise. `answer_affordance`
        teacher-forces the answer 'The affordance type is <it>, and the contact region is [SEG].' (the reference's
        `forward` evaluation path); None generates the answer. The camera encoder sees
        the object views at `cam_distance` (2.0: the view set's cam_params, what PIAD training and evaluation
        used). Heat maps are the sigmoid of the logits on rendered pixels; points average them per view, then
        over the views that see them (no threshold).
        """
        t0 = time.perf_counter()
        views = get_view_set(self.object_view_set, dist=cam_distance)
        renders = np.asarray(renders)
        if renders.ndim != 4 or renders.dtype != np.uint8 or renders.shape[0] != len(views) or renders.shape[-1] != 3:
            raise InvalidInputError(f"renders must be ({len(views)},H,W,3) uint8, got {renders.dtype} {renders.shape}")
        if maps.num_views != len(views) or maps.resolution != tuple(renders.shape[1:3]):
            raise InvalidInputError(
                f"point maps of {maps.num_views} views at {maps.resolution} do not fit {len(views)} renders of "
                f"{tuple(renders.shape[1:3])}"
            )
        answer_ids = None if answer_affordance is None else self.affordance_answer_ids(answer_affordance, object_name)
        asked = self._ask(
            image,
            object_contact_question(object_name, self._object_template(template) if template else "afford"),
            "object_affordance",
            object_name,
            False,
            _AskOptions(True, False, max_new_tokens, answer_ids, stop_at_mask),
            t0,
        )
        if isinstance(asked, NoContactFound):
            return asked
        lang, out, timings = asked
        t1 = time.perf_counter()
        embeddings, sizes = self.encode_sam_images(renders)
        enc = self.camera_encodings(cam_params_tensor(views))
        logits, iou, _ = self._decode(out, embeddings, sizes, enc, len(views), maps.resolution)
        heat = affordance_heat_maps(logits.float(), renders)
        t2 = time.perf_counter()
        affordance = lift_point_heat(heat, maps)[0]
        timings.update({"sam_s": t2 - t1, "lift_s": time.perf_counter() - t2, "total_s": time.perf_counter() - t0})
        return PointAffordanceResult(
            object_name,
            lang,
            tuple(v.name for v in views),
            heat.cpu().numpy(),
            iou[:, 0].cpu().numpy(),
            affordance.cpu().numpy().astype(np.float32),
            timings,
        )

    @torch.inference_mode()
    def predict_interaction(
        self,
        image: np.ndarray,
        object_name: str,
        vertices: np.ndarray,
        faces: np.ndarray,
        human_template: str | None = None,
        object_template: str | None = None,
        max_new_tokens: int = 512,
        render_size: int | None = None,
    ) -> tuple[HumanContactResult | NoContactFound, ObjectContactResult | NoContactFound]:
        """Human and object contact for one photo in one pass: CLIP once, both questions decoded as one
        batch of 2 with the static decoder (the eager decoder asks them one after the other)."""
        if self.decoding != "static":
            return (
                self.predict_human_contact(image, object_name, human_template, max_new_tokens=max_new_tokens),
                self.predict_object_contact(
                    image, object_name, vertices, faces, object_template, max_new_tokens=max_new_tokens,
                    render_size=render_size,
                ),
            )
        t0 = time.perf_counter()
        questions = [
            human_contact_question(object_name, self._human_template(human_template)),
            object_contact_question(object_name, self._object_template(object_template)),
        ]
        answers = self.run_language_batch(image, questions, max_new_tokens)
        results: list = []
        for (lang, out), task in zip(answers, ("human_contact", "object_contact")):
            timings = {"prefill_s": out.prefill_s, "decode_s": out.decode_s}
            if out.seg_hidden is None:
                results.append(NoContactFound(task, object_name, lang, timings | {"total_s": time.perf_counter() - t0}))
            elif task == "human_contact":
                results.append(self._human_masks(object_name, lang, out, timings, t0, naive=False))
            else:
                results.append(
                    self._object_masks(object_name, lang, out, timings, t0, vertices, faces, render_size, False)
                )
        return results[0], results[1]

    @torch.inference_mode()
    def predict_human_contact_2d(
        self,
        image: np.ndarray,
        object_name: str,
        generate: bool = True,
        naive: bool = False,
        max_new_tokens: int = 512,
        answer_ids: Sequence[int] | None = None,
        stop_at_mask: bool = True,
        return_internals: bool = False,
    ) -> Contact2DResult | NoContactFound:
        """2D contact mask on the photo (SAM sees the photo; camera params are zeros as in training)."""
        t0 = time.perf_counter()
        photo = as_rgb(image)
        asked = self._ask(
            photo,
            human_2d_contact_question(object_name),
            "human_contact_2d",
            object_name,
            True,
            _AskOptions(generate, naive, max_new_tokens, answer_ids, stop_at_mask),
            t0,
        )
        if isinstance(asked, NoContactFound):
            return asked
        lang, out, timings = asked
        t1 = time.perf_counter()
        embeddings, sizes = self.encode_sam_images(photo[None])
        num_tokens = max(1, self.config.multiview_channels)
        enc = self.camera_encodings(np.zeros((num_tokens, 5), np.float32))
        logits, iou, internals = self._decode(
            out, embeddings, sizes, enc, num_tokens, tuple(photo.shape[:2]), return_internals
        )
        timings.update({"sam_s": time.perf_counter() - t1, "total_s": time.perf_counter() - t0})
        return Contact2DResult(
            object_name, lang, logits[0].cpu().numpy(), float(iou[0, 0]), timings, internals=internals
        )


__all__ = [
    "Contact2DResult",
    "HumanContactResult",
    "InteractVLMPredictor",
    "MaskInternals",
    "NoContactFound",
    "ObjectContactResult",
    "PointAffordanceResult",
]
