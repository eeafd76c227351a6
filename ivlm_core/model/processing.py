"""InteractVLM processing: everything between the user's inputs and the model's tensors, and back.

The prompt and its 4.31-exact token ids, the CLIP and SAM image preprocessing, the reading of the generated
answer, and the render assets SAM sees (the fixed human renders with their lifting maps, the object views).
No weights live here (`modeling`), and no task logic (`predictor`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.geometry.lifting import LiftingMaps
from ivlm_core.geometry.views import get_view_set
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


# ------------------------------------------------------------------------------------------------ assets
@dataclass(eq=False)
class HumanRenderAssets:
    """The 4 fixed SAM inputs of the human task and the pixel->vertex maps that lift masks to SMPL-H."""

    view_names: tuple[str, ...]
    renders: np.ndarray  # (V,H,W,3) uint8
    maps: LiftingMaps

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

    @classmethod
    def from_reference_folder(cls, data_dir: str | Path, view_set: str = DEFAULT_HUMAN_VIEW_SET) -> HumanRenderAssets:
        """The reference `data/` folder (or its `hcontact_vitruvian*` subfolder): renders + 1024² maps."""
        from PIL import Image

        names = tuple(v.name for v in get_view_set(view_set))
        data_dir = Path(data_dir)
        wanted = HUMAN_VIEW_FOLDERS.get(view_set, "hcontact_vitruvian")
        candidates = [data_dir / wanted, data_dir / "hcontact_vitruvian", data_dir]
        folder = next((c for c in candidates if (c / f"body_render_norm_{names[0]}.png").is_file()), None)
        if folder is None:
            raise MissingAssetError(
                "InteractVLM human renders (body_render_norm_topfront.png ...)",
                data_dir / wanted,
                "Unzip the reference data.zip and pass its data/ folder, or give the SMPL-H body model "
                "folder "
                "so ivlm renders the Vitruvian body itself.",
            )
        renders = np.stack([np.asarray(Image.open(folder / f"body_render_norm_{n}.png").convert("RGB")) for n in names])
        maps = LiftingMaps.from_reference_folder(
            folder, names, num_vertices=SMPLH_NUM_VERTICES, resolution=renders.shape[1]
        )
        return cls(names, renders, maps)

    @classmethod
    def render_vitruvian(
        cls, body_model_dir: str | Path, view_set: str = DEFAULT_HUMAN_VIEW_SET, image_size: int = 1024
    ) -> HumanRenderAssets:
        """Render the SMPL-H Vitruvian body normal-coloured in the 4 human views (no reference data)."""
        from ivlm_core.body.models import canonical_vitruvian_mesh
        from ivlm_core.geometry.shading import render_views

        views = get_view_set(view_set)
        vertices, faces = canonical_vitruvian_mesh(body_model_dir)
        images, frags = render_views(vertices, faces, views, image_size=image_size, style="normals")
        return cls(tuple(v.name for v in views), images, LiftingMaps.from_fragments(frags, len(vertices)))


def render_object_views(
    vertices: np.ndarray, faces: np.ndarray, view_set: str, dist: float, image_size: int
) -> tuple[tuple[str, ...], np.ndarray, LiftingMaps]:
    """Normalise the mesh and render it xyz-coloured in the object views at `dist`, with its lifting maps."""
    from ivlm_core.geometry.shading import normalize_mesh, render_views

    verts = normalize_mesh(np.asarray(vertices, dtype=np.float64))
    views = get_view_set(view_set, dist=dist)
    images, frags = render_views(verts, np.asarray(faces), views, image_size=image_size, style="xyz")
    return tuple(v.name for v in views), images, LiftingMaps.from_fragments(frags, len(verts))


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

    def decode_answer(self, prompt: str, out: GenerationOutput) -> LanguageResult:
        """The generated ids as text, parsed into body parts / affordance and the mask token."""
        text = self.prompt_tokenizer.decode([t for t in out.generated_ids if t != self.token_ids.eos])
        parsed = parse_answer(text)
        return LanguageResult(
            prompt=prompt,
            prompt_ids=list(out.prompt_ids),
            generated_ids=list(out.generated_ids),
            text=text,
            body_parts=parsed.body_parts,
            affordance=parsed.affordance,
            seg_token=self.token_name(out.seg_token_id),
            seg_index=out.seg_index,
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
    "DEFAULT_HUMAN_VIEW_SET",
    "DEFAULT_OBJECT_VIEW_SET",
    "HumanRenderAssets",
    "InteractVLMProcessor",
    "LanguageResult",
    "as_rgb",
    "render_object_views",
]
