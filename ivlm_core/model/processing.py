"""InteractVLM processing: everything between the user's inputs and the model's tensors, and back.

The prompt and its 4.31-exact token ids, the CLIP and SAM image preprocessing, the reading of the generated
answer, and the render assets SAM sees (the fixed human renders with their lifting maps, the object views).
No weights live here (`modeling`), and no task logic (`predictor`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.geometry.lifting import LiftingMaps
from ivlm_core.geometry.views import cam_params_tensor, get_view_set
from ivlm_core.model.llava import GenerationOutput
from ivlm_core.model.prompts import (
    HSEG_TOKEN,
    IMAGE_TOKEN,
    OSEG_TOKEN,
    SEG_TOKEN,
    SYSTEM_PROMPT,
    PromptTokenizer,
    build_prompt,
    parse_answer,
)
from ivlm_core.model.sam import SamSpec, sam_preprocess

HUMAN_VIEW_FOLDERS = {
    "4MV-Z_Vitru": "hcontact_vitruvian",
    "4MV-Z_Vitru_FootGround": "hcontact_vitruvian",
    "4MV-Z_Vitru_wScene": "hcontact_vitruvian",
    "4MV-Z_Vitru_mv2": "hcontact_vitruvian_mv2",
}
"""Reference data folder of each human view set (the mv2 folder has the same geometry; we fall back to it)."""
DEFAULT_HUMAN_VIEW_SET = "4MV-Z_Vitru"
DEFAULT_OBJECT_VIEW_SET = "4MV-Z_HM"
SMPLH_NUM_VERTICES = 6890
HUMAN_QUESTION_TYPES = ("parts", "simple")
OBJECT_QUESTION_TYPES = ("afford", "contact")
ANSWER_CONTACT = "contact"
ANSWER_NO_CONTACT = "no_contact"
ANSWER_TRUNCATED = "truncated"
"""How an answer ended: with a mask token, without one, or cut by max_new_tokens before any (not 'no contact')."""


# ------------------------------------------------------------------------------------------------ per checkpoint
def human_question_type(config, override: str | None = None) -> str:
    """The human question template: `override`, else the checkpoint's `hC_question_type` (parts if unknown)."""
    if override not in (None, "", "auto"):
        if override not in HUMAN_QUESTION_TYPES:
            raise InvalidInputError(f"human question type must be one of {HUMAN_QUESTION_TYPES} or 'auto', "
                                    f"got '{override}'.")
        return str(override)
    return config.hC_question_type if config.hC_question_type in HUMAN_QUESTION_TYPES else "parts"


def object_question_type(config, override: str | None = None) -> str:
    """The object question template: `override`, else 'contact' for PICO-trained models (joint model,
    `oC_question_type` other than afford) and 'afford' for the affordance model."""
    if override not in (None, "", "auto"):
        if override not in OBJECT_QUESTION_TYPES:
            raise InvalidInputError(f"object question type must be one of {OBJECT_QUESTION_TYPES} or 'auto', "
                                    f"got '{override}'.")
        return str(override)
    pico = config.token_type == "Gen-Hu-Obj" or config.oC_question_type != "afford"
    return "contact" if pico else "afford"


@dataclass(frozen=True)
class EncoderCameras:
    """Which normalised cameras the vi_v1 encoder sees for the object views, and why (independent of the
    distance the mesh is rendered at)."""

    name: str  # "cam_params" (distance 2.0), "mesh_cam_params" (1.5) or "override"
    distance: float
    reason: str

    def params(self, view_set: str) -> np.ndarray:
        """(V, 5) normalised [d/10, elev/360, azim/360, (x+1)/2, (y+1)/2] of the view set at this distance."""
        return cam_params_tensor(get_view_set(view_set, dist=self.distance))


def object_encoder_cameras(config, distance: float | None = None) -> EncoderCameras:
    """The object-view camera parameters each checkpoint was trained with (spec 1.3, 1.4, 2.6).

    The affordance model (token type Gen, `oC_sam_view_type` 4MV-Z_HM, afford questions) was trained on the view
    set's `cam_params` at distance 2.0, which the reference demo also feeds. PICO-trained object contact (the
    joint Gen-Hu-Obj model, `4MV-Z_HM_BM`, contact questions) saw `mesh_cam_params` at 1.5. `distance` overrides.
    """
    if distance is not None:
        if isinstance(distance, bool) or not isinstance(distance, (int, float)) or not math.isfinite(distance) \
                or distance <= 0:
            raise InvalidInputError(f"object camera distance must be a positive number, got {distance!r}.")
        return EncoderCameras("override", float(distance), "set explicitly (object_cam_distance)")
    if config.token_type == "Gen-Hu-Obj" or config.oC_sam_view_type == "4MV-Z_HM_BM" \
            or config.oC_question_type not in (None, "afford"):
        return EncoderCameras(
            "mesh_cam_params", 1.5,
            f"PICO-trained object contact (token_type {config.token_type}, oC_sam_view_type "
            f"{config.oC_sam_view_type}, oC_question_type {config.oC_question_type}): trained on mesh_cam_params",
        )
    return EncoderCameras(
        "cam_params", 2.0,
        f"affordance model (token_type {config.token_type}, oC_sam_view_type {config.oC_sam_view_type}, "
        f"oC_question_type {config.oC_question_type}): trained and run by the reference on cam_params",
    )


# ------------------------------------------------------------------------------------------------ answer
@dataclass
class LanguageResult:
    """What the LLM said: prompt, greedy answer, its parsed body parts / affordance, and the mask token."""

    prompt: str
    prompt_ids: list[int]
    generated_ids: list[int]
    text: str
    body_parts: tuple[str, ...]
    affordance: str | None
    seg_token: str | None
    seg_index: int | None
    status: str = ANSWER_CONTACT  # ANSWER_CONTACT | ANSWER_NO_CONTACT | ANSWER_TRUNCATED
    message: str = ""

    @property
    def truncated(self) -> bool:
        return self.status == ANSWER_TRUNCATED


# ------------------------------------------------------------------------------------------------ assets
@dataclass(eq=False)
class RenderAssets:
    """The fixed SAM inputs of one task (V renders) and the pixel->vertex maps that lift masks to the mesh."""

    view_names: tuple[str, ...]
    renders: np.ndarray  # (V,H,W,3) uint8
    maps: LiftingMaps
    source: str = "given arrays"  # where the renders came from (reported by `describe_inputs`)

    def __post_init__(self) -> None:
        r = np.asarray(self.renders)
        if r.ndim != 4 or r.shape[-1] != 3 or r.dtype != np.uint8 or r.shape[0] != len(self.view_names):
            raise InvalidInputError(
                f"renders must be (V,H,W,3) uint8 with V={len(self.view_names)}, got {r.dtype} {r.shape}."
            )
        if self.maps.num_views != r.shape[0] or self.maps.resolution != tuple(r.shape[1:3]):
            raise InvalidInputError(
                f"lifting maps {self.maps.num_views}x{self.maps.resolution} do not match the "
                f"renders {r.shape[0]}x{tuple(r.shape[1:3])}."
            )
        self.renders = r


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def reference_render_folder(data_dir: str | Path | None, view_set: str = DEFAULT_HUMAN_VIEW_SET) -> Path | None:
    """The folder holding the shipped human renders + maps under `data_dir` (the reference `data/`, its parent,
    or the `hcontact_vitruvian*` folder itself), or None. The mv2 view set falls back to hcontact_vitruvian."""
    if data_dir is None:
        return None
    names = tuple(v.name for v in get_view_set(view_set))
    wanted = HUMAN_VIEW_FOLDERS.get(view_set, "hcontact_vitruvian")
    root = Path(data_dir)
    for base in (root, root / "data"):
        for candidate in (base / wanted, base / "hcontact_vitruvian", base):
            if (candidate / f"body_render_norm_{names[0]}.png").is_file():
                return candidate
    return None


class HumanRenderAssets(RenderAssets):
    """The 4 fixed SAM inputs of the human task and the maps that lift masks to SMPL-H."""

    @classmethod
    def from_reference_folder(cls, data_dir: str | Path, view_set: str = DEFAULT_HUMAN_VIEW_SET) -> HumanRenderAssets:
        """The reference `data/` folder (or its `hcontact_vitruvian*` subfolder): renders + 1024² maps."""
        names = tuple(v.name for v in get_view_set(view_set))
        folder = reference_render_folder(data_dir, view_set)
        if folder is None:
            raise MissingAssetError(
                "InteractVLM human renders (body_render_norm_topfront.png ...)",
                Path(data_dir) / HUMAN_VIEW_FOLDERS.get(view_set, "hcontact_vitruvian"),
                "Unzip the reference data.zip and pass its data/ folder, or give the SMPL-H body model "
                "folder so ivlm renders the Vitruvian body itself.",
            )
        renders = np.stack([_read_rgb(folder / f"body_render_norm_{n}.png") for n in names])
        maps = LiftingMaps.from_reference_folder(
            folder, names, num_vertices=SMPLH_NUM_VERTICES, resolution=renders.shape[1]
        )
        return cls(names, renders, maps, f"reference renders in {folder}")

    @classmethod
    def render_vitruvian(
        cls, body_model_dir: str | Path, view_set: str = DEFAULT_HUMAN_VIEW_SET, image_size: int = 1024
    ) -> HumanRenderAssets:
        """Render the SMPL-H Vitruvian body as the reference did (normal colours, HardPhong, its lights)."""
        from ivlm_core.body.models import canonical_vitruvian_mesh
        from ivlm_core.geometry.shading import render_views

        views = get_view_set(view_set)
        vertices, faces = canonical_vitruvian_mesh(body_model_dir)
        images, frags = render_views(vertices, faces, views, image_size=image_size, style="normals")
        return cls(
            tuple(v.name for v in views), images, LiftingMaps.from_fragments(frags, len(vertices)),
            f"ivlm HardPhong render of the SMPL-H body in {body_model_dir}",
        )


class ObjectRenderAssets(RenderAssets):
    """The 4 SAM inputs of one object mesh and its maps: rendered by ivlm, or made by the reference demo."""

    @classmethod
    def from_reference_folder(
        cls, sam_inp_objs: str | Path, view_set: str = DEFAULT_OBJECT_VIEW_SET
    ) -> ObjectRenderAssets:
        """The demo's `<sample>/sam_inp_objs/`: `obj_render_color_{view}.png` + `lift2d_dict.pkl` (read safely)."""
        folder = Path(sam_inp_objs)
        names = tuple(v.name for v in get_view_set(view_set))
        paths = [folder / f"obj_render_color_{n}.png" for n in names]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise MissingAssetError(
                "Object renders " + ", ".join(missing), folder,
                "Pass the sam_inp_objs/ folder the reference demo wrote (or give the mesh so ivlm renders it).",
            )
        renders = np.stack([_read_rgb(p) for p in paths])
        return cls.from_arrays(names, renders, folder / "lift2d_dict.pkl", f"reference renders in {folder}")

    @classmethod
    def from_arrays(
        cls, view_names: Sequence[str], renders: np.ndarray, maps: LiftingMaps | str | Path, source: str = ""
    ) -> ObjectRenderAssets:
        """Ready-made renders with their maps, given as LiftingMaps or as a reference `lift2d_dict.pkl` path."""
        if not isinstance(maps, LiftingMaps):
            maps = LiftingMaps.from_lift2d_pkl(maps)
        return cls(tuple(view_names), np.asarray(renders), maps, source or "given renders")


def render_object_views(
    vertices: np.ndarray, faces: np.ndarray, view_set: str, dist: float, image_size: int
) -> ObjectRenderAssets:
    """Normalise the mesh and render it xyz-coloured in the object views at `dist`, with its lifting maps."""
    from ivlm_core.geometry.shading import normalize_mesh, render_views

    verts = normalize_mesh(np.asarray(vertices, dtype=np.float64))
    views = get_view_set(view_set, dist=dist)
    images, frags = render_views(verts, np.asarray(faces), views, image_size=image_size, style="xyz")
    return ObjectRenderAssets(
        tuple(v.name for v in views), images, LiftingMaps.from_fragments(frags, len(verts)),
        f"ivlm HardPhong render at distance {dist}",
    )


def reference_data_candidates(
    reference_data_dir: str | Path | None, smpl_to_smplx: str | Path | None, body_model_dir: str | Path | None
) -> list[Path]:
    """Where the reference `data/` may be: the explicit folder, the folder of smpl_to_smplx.pkl (users unzip
    data.zip for it anyway), the body model folder and its parent (`~/ivlm_data/{body_models,data}`); each
    also with a `data/` subfolder (`reference_render_folder`)."""
    found = [Path(reference_data_dir)] if reference_data_dir else []
    if smpl_to_smplx:
        transfer = Path(smpl_to_smplx)
        found.append(transfer.parent if transfer.suffix else transfer)
    if body_model_dir:
        found += [Path(body_model_dir), Path(body_model_dir).parent]
    return found


def resolve_human_assets(
    view_set: str,
    reference_data_dir: str | Path | None = None,
    smpl_to_smplx: str | Path | None = None,
    body_model_dir: str | Path | None = None,
    image_size: int = 1024,
) -> HumanRenderAssets:
    """The renders the human task uses: the shipped reference renders + maps when present (what the model was
    trained on), else ivlm's own HardPhong render of the SMPL-H body. An explicit `reference_data_dir` must hold
    them."""
    if reference_data_dir is not None:
        return HumanRenderAssets.from_reference_folder(reference_data_dir, view_set)
    for candidate in reference_data_candidates(None, smpl_to_smplx, body_model_dir):
        if reference_render_folder(candidate, view_set) is not None:
            return HumanRenderAssets.from_reference_folder(candidate, view_set)
    if body_model_dir is not None:
        return HumanRenderAssets.render_vitruvian(body_model_dir, view_set, image_size=image_size)
    raise MissingAssetError(
        "canonical body renders for human contact", "body_model_dir / reference_data_dir (both unset)",
        "Set reference_data_dir to the InteractVLM data/ folder (data.zip: data/hcontact_vitruvian/*, the renders "
        "the model was trained on), or body_model_dir to a folder with smplh/SMPLH_NEUTRAL.pkl "
        "(https://mano.is.tue.mpg.de) so ivlm renders the Vitruvian body itself.",
    )


def render_differences(own: RenderAssets, shipped: RenderAssets) -> dict[str, float]:
    """Mean absolute difference (0-255) per view between ivlm's render and the shipped one."""
    return {
        name: float(np.abs(own.renders[v].astype(np.int16) - shipped.renders[v].astype(np.int16)).mean())
        for v, name in enumerate(shipped.view_names)
    }


def describe_inputs(
    config,
    reference_data_dir: str | Path | None = None,
    smpl_to_smplx: str | Path | None = None,
    body_model_dir: str | Path | None = None,
    question_type: str | None = None,
    object_cam_distance: float | None = None,
    compare_renders: bool = True,
) -> dict[str, Any]:
    """What a checkpoint will be fed: which human renders, which question types, which encoder cameras.

    When the shipped renders and the body model are both there, also how far ivlm's own render is from the
    shipped one (mean absolute difference per view, rendered at the shipped resolution).
    """
    human_set = config.hC_sam_view_type or DEFAULT_HUMAN_VIEW_SET
    object_set = config.oC_sam_view_type or DEFAULT_OBJECT_VIEW_SET
    cams = object_encoder_cameras(config, object_cam_distance)
    renders: dict[str, Any] = {"view_set": human_set}
    shipped_folder = next(
        (f for c in reference_data_candidates(reference_data_dir, smpl_to_smplx, body_model_dir)
         if (f := reference_render_folder(c, human_set)) is not None),
        None,
    )
    if shipped_folder is not None:
        renders["in_use"] = "reference"
        renders["source"] = f"reference renders in {shipped_folder}"
        if body_model_dir is not None and compare_renders:
            shipped = HumanRenderAssets.from_reference_folder(shipped_folder, human_set)
            own = HumanRenderAssets.render_vitruvian(body_model_dir, human_set, image_size=shipped.renders.shape[1])
            renders["ivlm_render_mean_abs_diff"] = render_differences(own, shipped)
    elif body_model_dir is not None:
        renders["in_use"] = "ivlm"
        renders["source"] = f"ivlm HardPhong render of the SMPL-H body in {body_model_dir} (no reference renders found)"
    else:
        renders["in_use"] = None
        renders["source"] = "none: give the reference data/ folder or the body model folder"
    return {
        "human_renders": renders,
        "question_types": {
            "human": human_question_type(config, question_type),
            "object": object_question_type(config),
            "from": "override" if question_type not in (None, "", "auto") else "checkpoint config",
        },
        "object_encoder_cameras": {
            "set": cams.name,
            "distance": cams.distance,
            "view_set": object_set,
            "params": np.round(cams.params(object_set), 6).tolist(),
            "reason": cams.reason,
        },
        "human_encoder_cameras": {"view_set": human_set, "params": cam_params_tensor(get_view_set(human_set)).tolist()},
    }


def as_rgb(image: np.ndarray) -> np.ndarray:
    """The image as given when it is (H,W,3) uint8; InvalidInputError otherwise."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InvalidInputError(f"Expected an RGB uint8 image of shape (H,W,3), got {arr.dtype} {arr.shape}.")
    return arr


# ------------------------------------------------------------------------------------------------ processor
class InteractVLMProcessor:
    """Prompt + tokenizer + CLIP/SAM image preprocessing + answer reading of one checkpoint."""

    def __init__(
        self,
        config,
        prompt_tokenizer: PromptTokenizer,
        token_ids,
        image_processor,
        sam_spec: SamSpec,
        hf_tokenizer=None,
    ) -> None:
        self.config = config
        self.prompt_tokenizer = prompt_tokenizer
        self.token_ids = token_ids
        self.image_processor = image_processor
        self.sam_spec = sam_spec
        self.hf_tokenizer = hf_tokenizer

    # ---------------------------------------------------------------------------------------- text
    def build_prompt(self, question: str) -> str:
        if self.config.mm_use_im_start_end:
            return build_prompt(question)
        return f"{SYSTEM_PROMPT} USER: {IMAGE_TOKEN}\n{question} ASSISTANT:"

    def prompt_ids(self, question: str) -> list[int]:
        """`tokenizer_image_token` of the full conversation prompt (-200 at the image, BOS first)."""
        return self.prompt_tokenizer.encode_with_image(self.build_prompt(question))

    def token_name(self, token_id: int | None) -> str | None:
        names = {self.token_ids.seg: SEG_TOKEN}
        if self.token_ids.hseg is not None:
            names[self.token_ids.hseg] = HSEG_TOKEN
        if self.token_ids.oseg is not None:
            names[self.token_ids.oseg] = OSEG_TOKEN
        return None if token_id is None else names.get(int(token_id))

    def mask_token_for(self, human: bool) -> int:
        """The mask token of a task: [HSEG]/[OSEG] for the joint model, [SEG] otherwise."""
        if self.config.token_type == "Gen-Hu-Obj":
            return self.token_ids.hseg if human else self.token_ids.oseg
        return self.token_ids.seg

    def decode_answer(self, prompt: str, out: GenerationOutput, max_new_tokens: int | None = None) -> LanguageResult:
        """The generated ids as text, parsed into body parts / affordance and the mask token, and how the answer
        ended: with a mask token, without one, or cut at `max_new_tokens` before any mask token (truncated)."""
        text = self.prompt_tokenizer.decode([t for t in out.generated_ids if t != self.token_ids.eos])
        parsed = parse_answer(text)
        generated = list(out.generated_ids)
        if out.seg_hidden is not None:
            status, message = ANSWER_CONTACT, ""
        elif max_new_tokens is not None and len(generated) >= max_new_tokens and (
            not generated or generated[-1] != self.token_ids.eos
        ):
            status, message = ANSWER_TRUNCATED, f"answer truncated at {len(generated)} tokens (max_new_tokens)"
        else:
            status, message = ANSWER_NO_CONTACT, "the answer holds no mask token: no contact"
        return LanguageResult(
            prompt=prompt,
            prompt_ids=list(out.prompt_ids),
            generated_ids=list(out.generated_ids),
            text=text,
            body_parts=parsed.body_parts,
            affordance=parsed.affordance,
            seg_token=self.token_name(out.seg_token_id),
            seg_index=out.seg_index,
            status=status,
            message=message,
        )

    # ---------------------------------------------------------------------------------------- images
    def preprocess_image(self, image_rgb: np.ndarray) -> torch.Tensor:
        """CLIPImageProcessor (short side bicubic resize, center crop, /255, CLIP mean/std) -> (1,3,S,S)."""
        image = as_rgb(image_rgb)
        out = self.image_processor(images=image, return_tensors="pt")["pixel_values"]
        return out.to(torch.float32)

    def sam_inputs(self, images: np.ndarray) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Renders/photos (V,H,W,3) uint8 -> normalised, padded (V,3,S,S) and the resized sizes."""
        tensors, sizes = zip(*(sam_preprocess(np.ascontiguousarray(img), self.sam_spec) for img in images))
        return torch.stack(tensors), list(sizes)


__all__ = [
    "ANSWER_CONTACT",
    "ANSWER_NO_CONTACT",
    "ANSWER_TRUNCATED",
    "DEFAULT_HUMAN_VIEW_SET",
    "DEFAULT_OBJECT_VIEW_SET",
    "EncoderCameras",
    "HumanRenderAssets",
    "InteractVLMProcessor",
    "LanguageResult",
    "ObjectRenderAssets",
    "RenderAssets",
    "as_rgb",
    "describe_inputs",
    "human_question_type",
    "object_encoder_cameras",
    "object_question_type",
    "render_object_views",
    "resolve_human_assets",
]
