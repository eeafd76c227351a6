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
from ivlm_core.geometry.lifting import lift_human_legacy, lift_human_soft, lift_object_mesh
from ivlm_core.geometry.views import OBJECT_MESH_RENDER_DIST, cam_params_tensor, get_view_set
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
from ivlm_core.model.prompts import human_2d_contact_question, human_contact_question, object_contact_question

OBJECT_CACHE_SIZE = 4
"""Meshes whose renders and SAM embeddings the fast path keeps."""

HumanLifting = Literal["soft", "legacy"]


# ------------------------------------------------------------------------------------------------ results
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

    def prepare(self) -> None:
        """Precompute what the fast path reuses (call once at start-up to keep it off the first frame):
        the SAM embeddings of the human renders and the camera encodings of the human and object views."""
        if self._human_assets is not None:
            self.human_image_embeddings()
        cam_encoder = self.model.cam_encoder
        for params in (cam_params_tensor(get_view_set(self.human_view_set)), self.object_camera_params()):
            if cam_encoder is not None and cam_encoder.num_views == len(params):
                self.camera_encodings(params)

    def object_camera_params(self) -> np.ndarray:
        """(V, 5) normalised cameras the encoder sees for the object views (`encoder_cameras`)."""
        return self.encoder_cameras.params(self.object_view_set)

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
            stop_at_mask=stop_at_mask,
        )
        generated = generate and answer_ids is None
        return self.processor.decode_answer(prompt, out, max_new_tokens if generated else None), out

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

    def _ask(
        self,
        image: np.ndarray,
        question: str,
        task: str,
        object_name: str,
        human: bool,
        generate: bool,
        naive: bool,
        max_new_tokens: int,
        answer_ids: Sequence[int] | None,
        t0: float,
        stop_at_mask: bool = True,
    ) -> tuple[LanguageResult, GenerationOutput, dict[str, float]] | NoContactFound:
        """Ask one task's question; a typed NoContactFound (no_contact or truncated) without a mask token."""
        lang, out = self.run_language(
            image,
            question,
            generate=generate,
            naive=naive,
            max_new_tokens=max_new_tokens,
            forced_token=self.processor.mask_token_for(human=human),
            answer_ids=answer_ids,
            stop_at_mask=stop_at_mask,
        )
        timings = {"prefill_s": out.prefill_s, "decode_s": out.decode_s}
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
        template = human_question_type(self.config, template) if template else self.question_type
        if not generate and template != "simple":
            raise InvalidInputError(
                "generate=False appends the mask token right after the question, which "
                "matches training only for the 'simple' template."
            )
        assets = self._require_human_assets()
        asked = self._ask(
            image,
            human_contact_question(object_name, template),
            "human_contact",
            object_name,
            True,
            generate,
            naive,
            max_new_tokens,
            answer_ids,
            t0,
            stop_at_mask,
        )
        if isinstance(asked, NoContactFound):
            return asked
        lang, out, timings = asked
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

    def _object_inputs(self, vertices: np.ndarray, faces: np.ndarray, render_size: int | None, naive: bool):
        """Renders + maps and SAM embeddings of a mesh; the fast path keeps the last few meshes (a robot sees
        the same objects frame after frame), the naive path recomputes them."""
        size = int(render_size or self.object_render_size)
        verts = np.ascontiguousarray(vertices, dtype=np.float64)
        tris = np.ascontiguousarray(faces, dtype=np.int64)
        key = (
            hashlib.sha1(verts.tobytes() + tris.tobytes()).hexdigest(),
            verts.shape,
            tris.shape,
            size,
            self.object_render_dist,
            self.object_view_set,
        )
        if not naive and key in self._object_cache:
            self._object_cache.move_to_end(key)
            return self._object_cache[key]
        assets = self.render_object(verts, tris, size)
        embeddings, sizes = self.encode_sam_images(assets.renders)
        entry = (assets, embeddings, sizes)
        if not naive:
            self._object_cache[key] = entry
            while len(self._object_cache) > OBJECT_CACHE_SIZE:
                self._object_cache.popitem(last=False)
        return entry

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
        template = object_question_type(self.config, template)
        if not generate and template != "contact":
            raise InvalidInputError("generate=False is only meaningful for the 'contact' object template.")
        asked = self._ask(
            image,
            object_contact_question(object_name, template),
            "object_contact",
            object_name,
            False,
            generate,
            naive,
            max_new_tokens,
            answer_ids,
            t0,
            stop_at_mask,
        )
        if isinstance(asked, NoContactFound):
            return asked
        lang, out, timings = asked
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
        contacts = lift_object_mesh(logits[None].float(), assets.maps.to(logits.device))[0]
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
            generate,
            naive,
            max_new_tokens,
            answer_ids,
            t0,
            stop_at_mask,
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
]
