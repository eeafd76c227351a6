"""One camera frame in, everything ivlm estimates out: the ROS-free pipeline the node and the CLI share.

It owns the loaded assets (InteractVLM checkpoint, human renders + lifting maps, body models, SMPL->SMPL-X
transfer, object library, body placer) and answers `estimate(image, object_query)` with plain numpy results.
Assets the user has not supplied degrade the result with a stated reason instead of failing the frame:
without SMPL-X the contacts stay on the canonical body, without intrinsics nothing is placed.
A body from a better regressor (an OSX `.npz` or SMPL-X parameters) can replace the keypoint fit per frame.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import torch

from ivlm_core.errors import InvalidInputError, IvlmError, MissingAssetError
from ivlm_core.geometry.intrinsics import checked_camera_k, usable_camera_k
from ivlm_core.pipeline_config import PipelineConfig
from ivlm_core.user_text import validate_query

if TYPE_CHECKING:  # the fit's modules load only with the object fit (heavy imports)
    from ivlm_core.fitting.object_fit import FrameEvidence

LOG = logging.getLogger(__name__)

# A body from outside: an OSX result (`.npz` path or its loaded arrays: smpl_vertices, smpl_faces, bbox_2) or
# SMPL-X parameters in the camera frame (a mapping of ivlm_msgs/SmplxParams fields, or the flat 182-vector).
ExternalBody: TypeAlias = str | Path | Mapping[str, Any] | np.ndarray
OSX_KEYS = frozenset({"smpl_vertices", "smpl_faces", "bbox_2"})

__all__ = [
    "BodyPlacement",
    "Contact2DEstimate",
    "ContactEstimate",
    "ExternalBody",
    "HumanContactEstimate",
    "InteractionPipeline",
    "InteractionResult",
    "ObjectContactEstimate",
    "ObjectPlacement",
    "PipelineConfig",
]


# ------------------------------------------------------------------------------------------------ results
@dataclass
class HumanContactEstimate:
    """Per-vertex human contact; `body_model` says which body the vertex indices refer to."""

    contact_found: bool
    generated_text: str
    body_parts: list[str]
    view_images: np.ndarray  # (V,S,S,3) uint8: the SAM inputs (body renders)
    view_logits: np.ndarray | None  # (V,S,S) float32
    vertex_contact: np.ndarray | None  # (N_body,) float32 in [0,1]
    body_model: str  # "smplx" or "smplh"
    answer_status: str = "contact"  # "contact", "no_contact" or "truncated" (cut before its mask token)
    answer_message: str = ""  # e.g. "answer truncated at 512 tokens (max_new_tokens)"


@dataclass
class ObjectContactEstimate:
    """Per-vertex object contact on the library mesh, in the mesh file's vertex order."""

    label: str
    mesh_path: str
    vertices: np.ndarray  # (M,3) float32, metres, object frame
    faces: np.ndarray  # (K,3) int64
    contact_found: bool
    vertex_contact: np.ndarray | None  # (M,) float32
    affordance: str
    generated_text: str
    view_images: np.ndarray | None  # (V,S,S,3) uint8
    view_logits: np.ndarray | None  # (V,S,S) float32
    answer_status: str = "contact"  # "contact", "no_contact" or "truncated" (cut before its mask token)
    answer_message: str = ""


@dataclass
class Contact2DEstimate:
    """Human contact segmented on the photo itself by the 2D model (interactvlm-2d-hcontact)."""

    contact_found: bool
    generated_text: str
    logits: np.ndarray | None  # (H,W) float32 at the photo's resolution; probability = sigmoid(logits)
    answer_status: str = "contact"  # "contact", "no_contact" or "truncated" (cut before its mask token)
    answer_message: str = ""

    def mask(self, threshold: float = 0.5) -> np.ndarray | None:
        """Contact pixels (H,W) bool at a probability threshold (the reference demo uses 0.5)."""
        if self.logits is None:
            return None
        return self.logits > float(np.log(threshold / (1.0 - threshold)))


@dataclass
class BodyPlacement:
    """The SMPL-X body in the camera frame (OpenCV optical frame, metres), or why it could not be placed."""

    placed: bool
    status: str
    vertices: np.ndarray | None = None
    faces: np.ndarray | None = None
    params: dict[str, np.ndarray] = field(default_factory=dict)
    joints: np.ndarray | None = None  # (55, 3) SMPL-X joints in the camera frame (joint 0 = pelvis); None for meshes


@dataclass
class ObjectPlacement:
    """The object mesh fitted against the placed body by predicted contacts, or why it was not."""

    placed: bool
    status: str
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3, dtype=np.float32))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.float32))
    scale: float = 1.0
    vertices: np.ndarray | None = None
    report: dict[str, float] = field(default_factory=dict)
    # the object's last fitted frames' evidence, newest first, at most the fit config's pool_frames (none when
    # it is 0): the next refit of a held object pools them (not published)
    history: tuple[FrameEvidence, ...] = ()


@dataclass
class InteractionResult:
    object_query: str
    task: str
    human: HumanContactEstimate | None
    object: ObjectContactEstimate | None
    body_mesh: tuple[np.ndarray, np.ndarray] | None  # canonical body (vertices, faces) when not placed
    body_placement: BodyPlacement | None
    object_placement: ObjectPlacement | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    contact_2d: Contact2DEstimate | None = None


@dataclass
class ContactEstimate:
    """The VLM's part of a frame (no body, no object pose): what the node's contact loop produces."""

    object_query: str
    task: str
    human: HumanContactEstimate | None
    object: ObjectContactEstimate | None
    contact_2d: Contact2DEstimate | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ helpers
_NO_K = "no camera intrinsics (CameraInfo) for this frame"


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is an error with the fix."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            "device 'cuda' was requested but torch sees no CUDA GPU (torch "
            f"{torch.__version__}); install a CUDA build of torch and check the driver, or set device: cpu"
        )
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def check_image(image_rgb: np.ndarray) -> np.ndarray:
    """An RGB uint8 (H,W,3) image with a usable size, or InvalidInputError saying what arrived."""
    image = np.asarray(image_rgb)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(f"expected an RGB uint8 image of shape (H,W,3), got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < 8:
        raise InvalidInputError(f"image {image.shape[1]}x{image.shape[0]} is too small (need at least 8x8)")
    return image


def check_camera_k(camera_k: np.ndarray | None) -> np.ndarray | None:
    """K or None; InvalidInputError when it cannot be used (see ivlm_core.geometry.intrinsics)."""
    return None if camera_k is None else checked_camera_k(camera_k)


def contact_vertex_ids(contact: np.ndarray | None, threshold: float) -> np.ndarray:
    """Ascending vertex ids whose contact probability is at least `threshold`."""
    if contact is None:
        return np.zeros(0, dtype=np.uint32)
    return np.flatnonzero(np.asarray(contact) >= threshold).astype(np.uint32)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


# ------------------------------------------------------------------------------------------------ pipeline
class InteractionPipeline:
    """Loaded models + assets; `estimate()` is safe to call repeatedly from one worker thread."""

    def __init__(self, cfg: PipelineConfig, model: Any, body_mesh: tuple[np.ndarray, np.ndarray] | None,
                 body_model_name: str, object_library: Any, body_placer: Any, fit_config: Any,
                 model_2d: Any = None) -> None:
        self.cfg = cfg
        self.model = model
        self.model_2d = model_2d
        self.body_mesh = body_mesh
        self.body_model_name = body_model_name
        self.object_library = object_library
        self.body_placer = body_placer
        self.fit_config = fit_config
        self._param_placer: Any = None  # SMPL-X layer for external parameters when fit_human is off
        self.model_id = Path(cfg.checkpoint_dir).name
        self.device = str(model.device)
        self.dtype = str(model.dtype).replace("torch.", "")
        self.decoder_kernels = model.decoder_summary() if hasattr(model, "decoder_summary") else ""
        """How the LLM decodes after the load's warm-up (`InteractVLMPredictor.decoder_summary`)."""
        if self.decoder_kernels:
            LOG.info("LLM decoding: %s", self.decoder_kernels)

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, cfg: PipelineConfig, **model_kwargs: Any) -> InteractionPipeline:
        """Load everything the config names; missing user files raise with what to download and where.

        Extra keyword arguments go to `load_checkpoint` (e.g. a `sam_spec` for tiny test checkpoints).
        """
        from ivlm_core.model.checkpoint import load_checkpoint

        cfg.validate()
        if not cfg.checkpoint_dir:
            raise MissingAssetError(
                "InteractVLM checkpoint folder", "<unset>",
                "Set checkpoint_dir to an unzipped release, e.g. trained_models/interactvlm-3d-hcontact-damon "
                "(download: https://download.is.tue.mpg.de, domain 'interactvlm', registration required).",
            )
        device = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.dtype, device)
        if cfg.quantization != "none":
            from ivlm_core.model.quantization import check_quantization

            check_quantization(cfg.quantization, device)  # before minutes of loading
        transfer = cls._load_transfer(cfg)
        assets = cls._human_assets(cfg, model_kwargs.pop("human_view_set", None))
        model = load_checkpoint(cfg.checkpoint_dir, clip_dir=cfg.clip_dir, device=device, dtype=dtype,
                                human_assets=assets, contact_transfer=transfer,
                                object_cam_distance=cfg.object_cam_distance, question_type=cfg.question_template,
                                **model_kwargs)
        if not cfg.generate and model.question_type != "simple":
            raise InvalidInputError(
                f"generate=false appends the mask token to the prompt, which is only faithful for the 'simple' "
                f"question type; this checkpoint asks '{model.question_type}' (set question_template: simple or "
                "generate: true)")
        if cfg.quantization != "none":
            from ivlm_core.model.quantization import quantize_llm

            quantize_llm(model.model.llava.llm, cfg.quantization)
        part_names = None
        if cfg.draft_tokens:
            from ivlm_core.model.drafting import find_body_part_names

            part_names = find_body_part_names(cfg.reference_data_dir, cfg.body_model_dir)
            model.set_drafting(True, cfg.draft_tokens, part_names)
            LOG.info("draft-and-verify decoding, %d template tokens per forward; body-part names: %s", cfg.draft_tokens,
                     f"{len(part_names)} from smpl_segmentation_merged.pkl" if part_names else
                     "none found (smpl_segmentation_merged.pkl of data.zip), drafted by prompt lookup")
        model.set_decoder_compile(cfg.decoder_compile)
        model.set_decoder_gemv(cfg.decoder_gemv)
        model.prepare()  # SAM embeddings, camera encodings, static decoder + CUDA graphs: off the first frame
        body_mesh, body_name = cls._display_body(cfg, assets, transfer)
        library = None
        if cfg.object_library is not None:
            from ivlm_core.fitting.object_library import ObjectLibrary

            library = ObjectLibrary.load(cfg.object_library)
            library.load_all()  # every mesh checked now: a bad file fails the load, naming the file
            if cfg.task in ("object_contact", "interaction"):
                from ivlm_core.model.predictor import OBJECT_CACHE_SIZE

                for label in library.labels[:OBJECT_CACHE_SIZE]:  # renders + SAM embeddings off the first frame
                    mesh = library.get(label)
                    model.prepare_object(mesh.vertices, mesh.faces)
        placer = None
        if cfg.fit_human:
            from ivlm_core.fitting.body_fit import CameraBodyPlacer

            placer = CameraBodyPlacer.from_body_model_dir(cfg.body_model_dir)
        fit_config = None
        if cfg.fit_object:
            from ivlm_core.fitting.object_fit import ObjectFitConfig
            from ivlm_core.fitting.object_fit import warm_up as warm_up_object_fit

            fit_config = (
                ObjectFitConfig.load(cfg.fit_config) if cfg.fit_config else ObjectFitConfig.load_default()
            )
            warm_up_object_fit()  # the optimiser's first import: off the first placement
        model_2d = None
        if cfg.contact_2d_checkpoint_dir is not None:
            model_2d = load_checkpoint(cfg.contact_2d_checkpoint_dir, clip_dir=cfg.clip_dir, device=device,
                                       dtype=dtype)
            if cfg.quantization != "none":
                quantize_llm(model_2d.model.llava.llm, cfg.quantization)
            model_2d.set_drafting(bool(cfg.draft_tokens), cfg.draft_tokens or 1, part_names)
            model_2d.set_decoder_compile(cfg.decoder_compile)
            model_2d.set_decoder_gemv(cfg.decoder_gemv)
            model_2d.prepare()
        return cls(cfg, model, body_mesh, body_name, library, placer, fit_config, model_2d)

    @staticmethod
    def _load_transfer(cfg: PipelineConfig) -> Any:
        from ivlm_core.body.transfer import ContactTransfer

        source = cfg.smpl_to_smplx or cfg.body_model_dir
        if source is None:
            return None
        try:
            return ContactTransfer.load(source)
        except MissingAssetError:
            if cfg.smpl_to_smplx is not None:
                raise
            LOG.warning("no smpl_to_smplx.pkl in %s: contacts stay on the SMPL-H canonical body",
                        cfg.body_model_dir)
            return None

    @staticmethod
    def _human_assets(cfg: PipelineConfig, view_set: str | None) -> Any:
        """The shipped reference renders + maps when present (explicit folder, next to smpl_to_smplx.pkl or in
        the body model folder), else ivlm's own HardPhong render of the Vitruvian body."""
        from ivlm_core.model.checkpoint import read_config
        from ivlm_core.model.processing import DEFAULT_HUMAN_VIEW_SET, resolve_human_assets

        if cfg.task == "object_contact":
            return None
        view_set = view_set or read_config(cfg.checkpoint_dir).hC_sam_view_type or DEFAULT_HUMAN_VIEW_SET
        assets = resolve_human_assets(view_set, cfg.reference_data_dir, cfg.smpl_to_smplx, cfg.body_model_dir)
        LOG.info("human renders: %s", assets.source)
        return assets

    @staticmethod
    def _display_body(cfg: PipelineConfig, assets: Any, transfer: Any) -> tuple[Any, str]:
        """The mesh the contacts live on: canonical SMPL-X when the transfer exists, else the SMPL-H body."""
        from ivlm_core.body.models import canonical_vitruvian_mesh, load_body_model

        if cfg.body_model_dir is None or assets is None:
            return None, "smplx" if transfer is not None else "smplh"
        if transfer is not None:
            try:
                model = load_body_model(cfg.body_model_dir, "smplx")
            except MissingAssetError as err:
                LOG.warning("%s: the SMPL-X body mesh cannot be shown", err)
                return None, "smplx"
            with torch.no_grad():
                vertices = model().vertices[0].cpu().numpy().astype(np.float32)
            if len(vertices) != transfer.num_target:
                raise InvalidInputError(
                    f"the SMPL-X model has {len(vertices)} vertices but smpl_to_smplx maps to "
                    f"{transfer.num_target}; use the files that belong together")
            return (vertices, np.asarray(model.faces, dtype=np.int64)), "smplx"
        vertices, faces = canonical_vitruvian_mesh(cfg.body_model_dir)
        return (vertices, faces), "smplh"

    def release(self) -> None:
        """Drop the model and free accelerator memory (lifecycle cleanup)."""
        self.model = self.model_2d = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------------------------------- inference
    def estimate(self, image_rgb: np.ndarray, object_query: str, task: str | None = None,
                 camera_k: np.ndarray | None = None, object_mask: np.ndarray | None = None,
                 object_box: tuple[float, float, float, float] | None = None,
                 external_body: ExternalBody | None = None) -> InteractionResult:
        """Run the configured (or given) task on one RGB frame.

        `external_body` (see `ExternalBody`) replaces the keypoint body fit for this frame; it is checked before
        the model runs, so a malformed body fails fast with InvalidInputError / MissingAssetError.
        """
        image, query, task = self._checked_request(image_rgb, object_query, task)
        k, k_problem = usable_camera_k(camera_k)  # a bad K: contacts without placement, not a failed frame
        timings: dict[str, float] = {}
        body_placement = object_placement = None
        t_all = time.perf_counter()
        if external_body is not None:
            t0 = time.perf_counter()
            body_placement = self.external_body_placement(external_body, k, k_problem)
            timings["body_external"] = _ms(t0)
        contacts = self._contacts(image, query, task)
        timings.update(contacts.timings_ms)
        if body_placement is None and self.body_placer is not None and task in ("human_contact", "interaction"):
            t0 = time.perf_counter()
            body_placement = self._place_body(image, k, k_problem)
            timings["body_fit"] = _ms(t0)
        if self.fit_config is not None and task == "interaction":
            t0 = time.perf_counter()
            object_placement = self._place_object(image, contacts.human, contacts.object, body_placement, k,
                                                  object_mask, object_box, k_problem)
            timings["object_fit"] = _ms(t0)
        timings["total"] = _ms(t_all)
        return InteractionResult(query, task, contacts.human, contacts.object, self.body_mesh, body_placement,
                                 object_placement, timings, contacts.contact_2d)

    def estimate_contacts(self, image_rgb: np.ndarray, object_query: str, task: str | None = None) -> ContactEstimate:
        """Only the VLM step (human / object / 2D contact) of `estimate()`: the node's contact loop runs it at
        its own rate while bodies are tracked at camera rate (`new_body_tracker`)."""
        return self._contacts(*self._checked_request(image_rgb, object_query, task))

    def _checked_request(self, image_rgb: np.ndarray, object_query: str,
                         task: str | None) -> tuple[np.ndarray, str, str]:
        """(image, query, task) checked before any model work; the task defaults to the configured one."""
        if self.model is None:
            raise IvlmError("the pipeline was released; load it again")
        image = check_image(image_rgb)
        task = task or self.cfg.task
        if task not in ("human_contact", "object_contact", "interaction"):
            raise InvalidInputError(f"unknown task '{task}'")
        return image, validate_query(object_query), task  # query: length cap, no control chars / special tokens

    def _contacts(self, image: np.ndarray, query: str, task: str) -> ContactEstimate:
        timings: dict[str, float] = {}
        human = obj = contact_2d = None
        t_all = time.perf_counter()
        if task == "interaction" and self.cfg.generate:
            t0 = time.perf_counter()
            human, obj = self._interaction(image, query)  # one LLM pass for both questions
            timings["human_contact"] = timings["object_contact"] = _ms(t0)
        if task in ("human_contact", "interaction") and human is None:
            t0 = time.perf_counter()
            human = self._human_contact(image, query)
            timings["human_contact"] = _ms(t0)
        if task in ("object_contact", "interaction") and obj is None:
            t0 = time.perf_counter()
            obj = self._object_contact(image, query)
            timings["object_contact"] = _ms(t0)
        if self.model_2d is not None and task in ("human_contact", "interaction"):
            t0 = time.perf_counter()
            contact_2d = self._contact_2d(image, query)
            timings["contact_2d"] = _ms(t0)
        timings["contacts"] = _ms(t_all)
        return ContactEstimate(query, task, human, obj, contact_2d, timings)

    def new_body_tracker(self, max_people: int = 1, max_missing_s: float = 1.0) -> Any:
        """A fresh multi-person `ivlm_core.tracking.BodyTracker` on the configured SMPL-X model (camera-rate
        bodies, warm-started per track); without the model files it is `.available = False` with the reason.
        It shares the body placer's SMPL-X layer when one is loaded, so the node holds the model once."""
        from ivlm_core.tracking import BodyTracker, TrackerConfig

        config = TrackerConfig.from_dict({"max_people": max_people, "max_missing_s": max_missing_s})
        placer = self.body_placer
        if placer is not None and placer.available:  # share the loaded SMPL-X layer (read-only in both)
            return BodyTracker(placer.layer, config)
        return BodyTracker.from_body_model_dir(self.cfg.body_model_dir, config=config)

    def _interaction(self, image: np.ndarray, query: str) -> tuple[HumanContactEstimate, ObjectContactEstimate]:
        mesh = self._library_mesh(query)
        human, obj = self.model.predict_interaction(
            image, query, mesh.vertices, mesh.faces, max_new_tokens=self.cfg.max_new_tokens)
        return self._human_estimate(human), self._object_estimate(mesh, obj)

    def _human_contact(self, image: np.ndarray, query: str) -> HumanContactEstimate:
        result = self.model.predict_human_contact(
            image, query, generate=self.cfg.generate, max_new_tokens=self.cfg.max_new_tokens)
        return self._human_estimate(result)

    def _human_estimate(self, result: Any) -> HumanContactEstimate:
        renders = self.model.human_assets.renders
        if not result.found:
            return HumanContactEstimate(False, result.language.text, [], renders, None, None,
                                        self.body_model_name, result.status, result.message)
        if self.body_model_name == "smplx" and result.contacts_smplx is not None:
            contact = result.contacts_smplx
        else:
            contact = result.contacts_smplh
        return HumanContactEstimate(True, result.language.text, list(result.language.body_parts), renders,
                                    result.view_logits, np.clip(contact, 0.0, 1.0).astype(np.float32),
                                    self.body_model_name)

    def _contact_2d(self, image: np.ndarray, query: str) -> Contact2DEstimate:
        result = self.model_2d.predict_human_contact_2d(image, query, max_new_tokens=self.cfg.max_new_tokens)
        if not result.found:
            return Contact2DEstimate(False, result.language.text, None, result.status, result.message)
        return Contact2DEstimate(True, result.language.text, result.logits.astype(np.float32))

    def _library_mesh(self, query: str) -> Any:
        if self.object_library is None:
            raise InvalidInputError("object contact needs object_library (label -> mesh YAML)")
        return self.object_library.get(query)

    def _object_contact(self, image: np.ndarray, query: str) -> ObjectContactEstimate:
        mesh = self._library_mesh(query)
        result = self.model.predict_object_contact(
            image, query, mesh.vertices, mesh.faces, max_new_tokens=self.cfg.max_new_tokens)
        return self._object_estimate(mesh, result)

    def _object_estimate(self, mesh: Any, result: Any) -> ObjectContactEstimate:
        if not result.found:
            return ObjectContactEstimate(mesh.label, mesh.path, mesh.vertices, mesh.faces, False, None, "",
                                         result.language.text, None, None, result.status, result.message)
        return ObjectContactEstimate(mesh.label, mesh.path, mesh.vertices, mesh.faces, True,
                                     result.contacts.astype(np.float32), result.language.affordance or "",
                                     result.language.text, result.renders, result.view_logits)

    def _place_body(self, image: np.ndarray, k: np.ndarray | None, k_problem: str = "") -> BodyPlacement:
        if k is None:
            return BodyPlacement(False, f"body not placed: {k_problem or _NO_K}")
        fit = self.body_placer.place(image, k)
        return BodyPlacement(**fit.placement_kwargs())

    @property
    def contact_vertex_count(self) -> int | None:
        """Vertices of the body the human contacts live on (the SMPL-X count when contacts are on SMPL-X)."""
        if self.body_mesh is not None:
            return len(self.body_mesh[0])
        transfer = getattr(self.model, "contact_transfer", None)
        if self.body_model_name == "smplx" and transfer is not None:
            return int(transfer.num_target)
        return None

    def external_body_placement(self, body: ExternalBody, k: np.ndarray | None, k_problem: str = "") -> BodyPlacement:
        """An OSX result or SMPL-X parameters as this frame's BodyPlacement; the status names the source.

        OSX meshes carry their own vertices, so with contacts on SMPL-X their count must match the contact
        vector (InvalidInputError otherwise); they are moved from OSX's virtual crop camera into K, so without
        K they cannot be placed. Parameters are posed with the user's SMPL-X model (a stated reason without it).
        """
        if isinstance(body, (str, Path)) or (isinstance(body, Mapping) and OSX_KEYS & set(body)):
            return self._osx_placement(body, k, k_problem)
        if isinstance(body, (Mapping, np.ndarray)):
            return self._params_placement(body, k)
        raise InvalidInputError(
            f"external body must be an OSX .npz path, OSX arrays (smpl_vertices, smpl_faces, bbox_2) or SMPL-X "
            f"parameters (a mapping of SmplxParams fields or the flat 182-vector), got {type(body).__name__}")

    def _osx_placement(self, body: str | Path | Mapping[str, Any], k: np.ndarray | None,
                       k_problem: str = "") -> BodyPlacement:
        from ivlm_core.fitting.external_body import load_osx_npz, place_osx_body

        expected = self.contact_vertex_count if self.body_model_name == "smplx" else None
        osx = load_osx_npz(body, expected_vertices=expected)
        if k is None:
            return BodyPlacement(False, f"external OSX body not placed: {k_problem or _NO_K}; K is needed to "
                                        "move it from OSX's virtual crop camera into this camera")
        return BodyPlacement(**place_osx_body(osx, k).placement_kwargs())

    def _params_placement(self, params: Mapping[str, Any] | np.ndarray, k: np.ndarray | None) -> BodyPlacement:
        placer = self.body_placer
        if placer is None or not placer.available:
            if self._param_placer is None:
                from ivlm_core.fitting.body_fit import CameraBodyPlacer

                self._param_placer = CameraBodyPlacer.from_body_model_dir(self.cfg.body_model_dir, stream=False)
            placer = self._param_placer
        if not placer.available:
            reason = placer.unavailable_reason.removeprefix("body not placed: ")
            return BodyPlacement(False, f"external SMPL-X parameters not used: they need the SMPL-X model; {reason}")
        from ivlm_core.fitting.external_body import place_from_params

        fit = place_from_params(placer, params, k)
        vertices = fit.vertices
        expected = self.contact_vertex_count if self.body_model_name == "smplx" else None
        if expected is not None and vertices is not None and len(vertices) != expected:
            raise InvalidInputError(
                f"the SMPL-X model posed from the external parameters has {len(vertices)} vertices but the human "
                f"contacts have {expected}; use SMPL-X files that belong to the contact transfer")
        return BodyPlacement(**fit.placement_kwargs())

    def segment_object_box(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """Object mask from a detection box, with the SAM that is already loaded (official box semantics)."""
        from ivlm_core.model.object_mask import segment_object

        return segment_object(self.model.model.sam, image, box).mask

    def place_object(self, image_rgb: np.ndarray, human: HumanContactEstimate | None,
                     obj: ObjectContactEstimate | None, body: BodyPlacement | None, camera_k: np.ndarray | None,
                     object_mask: np.ndarray | None = None,
                     object_box: tuple[float, float, float, float] | None = None,
                     previous: ObjectPlacement | None = None) -> ObjectPlacement:
        """Fit the object to a placed body by the given contacts (the object step of `estimate()`, callable on
        its own: the node refits when a new contact arrives or the body moved, off its camera-rate path).

        Never raises for a missing input: the placement says why it was not placed. A box is turned into a
        mask with the loaded SAM; callers running the VLM in another thread pass the mask instead.
        previous: this object's last placement in a stream (moved with the body if it moved): a start pose,
        and the pose kept when two fit almost equally well, so the placement does not flip between them. It
        is ignored when it is of another mesh (its vertex count differs).
        """
        if self.fit_config is None:
            return ObjectPlacement(False, "object not placed: fit_object is off")
        image = check_image(image_rgb)
        k, k_problem = usable_camera_k(camera_k)
        return self._place_object(image, human, obj, body, k, object_mask, object_box, k_problem, previous)

    def _place_object(self, image: np.ndarray, human: HumanContactEstimate | None,
                      obj: ObjectContactEstimate | None, body: BodyPlacement | None, k: np.ndarray | None,
                      object_mask: np.ndarray | None,
                      object_box: tuple[float, float, float, float] | None, k_problem: str = "",
                      previous: ObjectPlacement | None = None) -> ObjectPlacement:
        from ivlm_core.fitting.object_fit import ObjectFitFailure, fit_object_to_body

        reasons = []
        if body is None or not body.placed:
            reasons.append(body.status if body is not None else "the body is not placed")
        if human is None or human.vertex_contact is None or self.body_model_name != "smplx":
            reasons.append("no SMPL-X human contact")
        if obj is None or obj.vertex_contact is None:
            reasons.append("no object contact")
        if k is None:
            reasons.append(k_problem or "no camera intrinsics")
        if object_mask is None and object_box is None:
            reasons.append("no object mask or box (set one on the object_mask / object_box inputs)")
        if object_mask is not None and np.asarray(object_mask).shape != image.shape[:2]:
            reasons.append(f"object mask shape {np.asarray(object_mask).shape} differs from the image's "
                           f"{image.shape[:2]}")
        if reasons:
            return ObjectPlacement(False, "object not placed: " + "; ".join(reasons))
        mask = object_mask if object_mask is not None else self.segment_object_box(image, object_box)
        if not np.asarray(mask).any():
            source = "the given object mask" if object_mask is not None else f"SAM's mask for box {object_box}"
            return ObjectPlacement(False, f"object not placed: {source} is empty; check the box or mask")
        previous_pose = None
        history: tuple[FrameEvidence, ...] = ()
        pool = self.fit_config.pool_frames
        if previous is not None and previous.placed and previous.vertices is not None and (
            len(previous.vertices) == len(obj.vertices)  # the same mesh (the object may have changed)
        ):
            previous_pose = (previous.rotation, previous.translation)
            history = tuple(previous.history)[:pool]
        try:
            fit = fit_object_to_body(
                object_vertices=obj.vertices, object_faces=obj.faces, object_contact=obj.vertex_contact,
                body_vertices=body.vertices, body_faces=body.faces, body_contact=human.vertex_contact,
                object_mask=mask, camera_k=k, config=self.fit_config,
                symmetry=self.object_library.get(obj.label).symmetry, previous_pose=previous_pose,
                history=history)
        except ObjectFitFailure as exc:  # e.g. mask too small, no contacts above threshold
            return ObjectPlacement(False, f"object not placed: {exc}")
        placement = fit.placement_kwargs()
        placement["history"] = (*placement["history"], *history)[:pool]
        return ObjectPlacement(**placement)
