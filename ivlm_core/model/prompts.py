"""InteractVLM prompts: question/answer templates, the LLaVA-v1 prompt string and its tokenisation.

The released models were trained with transformers 4.31's *slow* LLaMA tokenizer. Its added-token handling
differs from current transformers: an added token that is not one of bos/eos/unk strips the whitespace on
both of its sides before the neighbouring text is encoded (so ``"USER: <im_start>"`` loses the space and
``"<im_end>\\nWhich"`` loses the newline), and every text chunk is encoded by SentencePiece on its own, with
the dummy prefix. We re-implement exactly that on top of the SentencePiece model, so the prompt ids equal the
reference ids whatever transformers version is installed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ivlm_core.errors import InvalidInputError

IMAGE_TOKEN_INDEX = -200
"""Sentinel id that marks where the projected CLIP patch embeddings are spliced in."""
IMAGE_TOKEN = "<image>"
IM_START_TOKEN = "<im_start>"
IM_END_TOKEN = "<im_end>"
SEG_TOKEN = "[SEG]"
HSEG_TOKEN = "[HSEG]"
OSEG_TOKEN = "[OSEG]"

SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions."
)
"""LLaVA-v1 (`conv_templates["llava_v1"]`) system message; roles USER/ASSISTANT, separator ' '."""

# Question lists of the reference (`utils/utils.py`), without the leading "<image>\n" that the prompt builder
# adds. The demo and evaluation always use the first entry of each list.
HCONTACT_PARTS_QUESTIONS = (
    "Which body parts are in contact with the {class_name}? Segment these contact areas.",
    "Name and segment the specific body parts making contact with the {class_name}.",
    "Looking at the {class_name}, what parts of the human body are touching it? Show these contact regions.",
    "For the {class_name}, list and mask the human body parts that are in contact.",
    "Regarding the {class_name}, identify which body parts are touching it and highlight these contact "
    "areas.",
)
HCONTACT_SIMPLE_QUESTIONS = (
    "Segment the area on the human's body that is in direct contact with the {class_name} in this image.",
    "Identify and mask the part of the human that is touching or interacting with the {class_name} in this "
    "scene.",
    "Show the contact points on the human where they are physically connected to or interacting with "
    "{class_name}.",
    "Please provide a segmentation mask of the human's body parts that are in contact with {class_name}.",
    "Highlight the areas on the human where there is physical interaction or contact with {class_name}.",
)
OCONTACT_QUESTIONS = (
    "Segment the area on the {class_name} where the human is making direct contact in this image.",
    "Identify and mask the part of the {class_name} that the human is touching or interacting with in this "
    "scene.",
    "Show the contact points on the {class_name} where the human is physically connected to or interacting "
    "with it.",
    "Please provide a segmentation mask of the parts of the {class_name} that are in contact with the human.",
    "Highlight the areas on the {class_name} where there is physical interaction or contact with the human.",
)
OAFFORD_AFFORD_QUESTIONS = (
    "What type of affordance does the human-object interaction suggest? Then, segment the area on the "
    "{class_name} where the human is making contact.",
    "Describe the affordance provided by the interaction, and identify the part of the {class_name} that the "
    "human is touching or interacting with in this scene.",
    "Explain the affordance type shown by the contact points on the {class_name} where the human is "
    "physically connected. Then show the segmentation mask.",
    "Specify the affordance implied by the human's contact with the {class_name}, then provide a "
    "segmentation mask of the contact area.",
    "Describe the affordance associated with the physical interaction on the {class_name}, and highlight the "
    "contact areas with a segmentation mask.",
)
H2DCONTACT_QUESTIONS = HCONTACT_SIMPLE_QUESTIONS
"""The 2D human-contact demo asks the first `simple` human question."""

# Answer lists; {TOKEN} is [SEG] (token_type Gen) or [HSEG]/[OSEG] (Gen-Hu-Obj).
HCONTACT_PARTS_ANSWERS = (
    "The contacting body parts are {body_parts}, and the contact region is {TOKEN}.",
    "The involved body parts are {body_parts}, with the contact mask at {TOKEN}.",
    "Contact occurs at {body_parts}, with the contact points shown at {TOKEN}.",
    "The body parts in contact are {body_parts}, with contact mask at {TOKEN}.",
    "Body parts: {body_parts}, contact mask: {TOKEN}.",
)
HCONTACT_SIMPLE_ANSWERS = (
    "It is {TOKEN}.",
    "Sure, the human contact region is {TOKEN}.",
    "Sure, the contact points on human is {TOKEN}.",
    "Sure, the contact mask is {TOKEN}.",
    "{TOKEN}.",
)
OAFFORD_AFFORD_ANSWERS = (
    "The affordance type is {affordance}, and the contact region is {TOKEN}.",
    "This interaction suggests an affordance of {affordance}, and the object contact region is {TOKEN}.",
    "The contact points indicate an affordance of {affordance}, with the mask at {TOKEN}.",
    "This shows an affordance type of {affordance}, with contact at {TOKEN}.",
    "Affordance: {affordance}, contact mask: {TOKEN}.",
)
OAFFORD_AFFORD_OBJ_ANSWERS = (
    "The affordance type is {affordance} with {class_name}, and the contact region is {TOKEN}.",
    "This interaction suggests an affordance of {affordance} with {class_name}, and the object contact region is "
    "{TOKEN}.",
    "The contact points indicate an affordance of {affordance} with {class_name}, with the mask at {TOKEN}.",
    "This shows an affordance type of {affordance} with {class_name}, with contact at {TOKEN}.",
    "Affordance: {affordance} with {class_name}, contact mask: {TOKEN}.",
)
"""Answers of `oC_question_type` 'afford_obj' (asked with the afford questions)."""

HumanTemplate = Literal["parts", "simple"]
ObjectTemplate = Literal["afford", "contact"]
SCENE_OBJECT_NAME = "scene"
"""Object name that asks for ground/scene contact (DAMON foot-ground and RICH were trained with it)."""


def object_name_from_filename(filename: str) -> str:
    """The reference demo's object name: the part of the file name before '__', lower-cased."""
    stem = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if "__" not in stem:
        raise InvalidInputError(
            f"Cannot read an object name from '{filename}': the demo naming is '<object>__<anything>.jpg'."
        )
    return stem.split("__")[0].lower()


def _check_object_name(object_name: str) -> str:
    name = object_name.strip()
    if not name:
        raise InvalidInputError(
            "The object name must be a non-empty string (use 'scene' for ground contact)."
        )
    return name


def human_contact_question(object_name: str, template: HumanTemplate = "parts") -> str:
    """First question of the `parts` or `simple` human-contact list, as the demo asks it."""
    if template == "parts":
        return HCONTACT_PARTS_QUESTIONS[0].format(class_name=_check_object_name(object_name))
    if template == "simple":
        return HCONTACT_SIMPLE_QUESTIONS[0].format(class_name=_check_object_name(object_name))
    raise InvalidInputError(f"Unknown human question template '{template}'; use 'parts' or 'simple'.")


def object_contact_question(object_name: str, template: ObjectTemplate = "afford") -> str:
    """Object question: `afford` (affordance models, stray quotes of the demo removed) or `contact` (PICO)."""
    if template == "afford":
        return OAFFORD_AFFORD_QUESTIONS[0].format(class_name=_check_object_name(object_name))
    if template == "contact":
        return OCONTACT_QUESTIONS[0].format(class_name=_check_object_name(object_name))
    raise InvalidInputError(f"Unknown object question template '{template}'; use 'afford' or 'contact'.")


def human_2d_contact_question(object_name: str) -> str:
    return H2DCONTACT_QUESTIONS[0].format(class_name=_check_object_name(object_name))


def build_prompt(question: str) -> str:
    """The exact LLaVA-v1 conversation string of the demo: system, USER turn with the image, empty reply."""
    return f"{SYSTEM_PROMPT} USER: {IM_START_TOKEN}{IMAGE_TOKEN}{IM_END_TOKEN}\n{question} ASSISTANT:"


class _SentencePiece(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class PromptTokenizer:
    """transformers-4.31 slow-LLaMA tokenisation over a SentencePiece model plus the added-token table.

    `added_tokens` maps the added (non-SentencePiece) tokens, e.g. [SEG], <im_start>, to their ids. A literal
    "<s>", "</s>" or "<unk>" in the text (say, inside an object name) becomes the bos / eos / unk id, as in 4.31,
    where the special tokens are never split; unlike added tokens they keep the whitespace around them (LLaMA
    saves them as AddedToken(lstrip=False, rstrip=False)).
    """

    sp_model: _SentencePiece
    added_tokens: Mapping[str, int]
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 0

    @property
    def special_tokens(self) -> dict[str, int]:
        return {"<s>": self.bos_id, "</s>": self.eos_id, "<unk>": self.unk_id}

    def _split_added(self, text: str) -> list[str]:
        whole = {**self.special_tokens, **self.added_tokens}
        alternatives = "|".join(re.escape(t) for t in sorted(whole, key=len, reverse=True))
        parts = re.split(f"({alternatives})", text)
        for i, part in enumerate(parts):
            if part in self.added_tokens:
                # 4.31: added tokens without an AddedToken spec strip the whitespace on both sides.
                if i + 1 < len(parts):
                    parts[i + 1] = parts[i + 1].lstrip()
                if i > 0:
                    parts[i - 1] = parts[i - 1].rstrip()
        return [p for p in parts if p]

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = [self.bos_id] if add_bos else []
        special = self.special_tokens
        for part in self._split_added(text):
            if part in self.added_tokens:
                ids.append(self.added_tokens[part])
            elif part in special:
                ids.append(special[part])
            else:
                ids.extend(int(i) for i in self.sp_model.encode(part))
        return ids

    def encode_with_image(self, prompt: str) -> list[int]:
        """`tokenizer_image_token`: split on <image>, BOS only on the first chunk, chunks joined by -200."""
        chunks = prompt.split(IMAGE_TOKEN)
        if len(chunks) != 2:
            raise InvalidInputError(
                f"The prompt must contain exactly one '{IMAGE_TOKEN}', found {len(chunks) - 1}."
            )
        ids: list[int] = []
        for k, chunk in enumerate(chunks):
            chunk_ids = self.encode(chunk, add_bos=True)
            if k > 0:
                ids.append(IMAGE_TOKEN_INDEX)
                chunk_ids = chunk_ids[1:]
            ids.extend(chunk_ids)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Readable text: SentencePiece runs decoded; added tokens, bos/eos and -200 spelled out."""
        id_to_added = {v: k for k, v in self.added_tokens.items()}
        special = {self.bos_id: "<s>", self.eos_id: "</s>", IMAGE_TOKEN_INDEX: IMAGE_TOKEN}
        pieces: list[str] = []
        run: list[int] = []

        def flush() -> None:
            if run:
                pieces.append(self.sp_model.decode(list(run)))
                run.clear()

        for i in ids:
            i = int(i)
            if i in id_to_added or i in special:
                flush()
                pieces.append(id_to_added.get(i, special.get(i, "")))
            else:
                run.append(i)
        flush()
        # Like the 4.31 slow tokenizer (spaces_between_special_tokens): pieces are joined by single spaces.
        return " ".join(p for p in pieces if p)


@dataclass(frozen=True)
class ParsedAnswer:
    """What the generated answer says beside the mask token."""

    body_parts: tuple[str, ...] = ()
    affordance: str | None = None
    seg_tokens: tuple[str, ...] = ()


def _template_regex(template: str, field: str) -> re.Pattern[str]:
    """The answer template as a regex; its final '.' is optional (decoding stops at the mask token)."""
    escaped = re.escape(template.removesuffix("."))
    escaped = escaped.replace(re.escape("{" + field + "}"), f"(?P<{field}>.+?)")
    escaped = escaped.replace(re.escape("{TOKEN}"), r"\s*(?:\[SEG\]|\[HSEG\]|\[OSEG\])\s*")
    return re.compile(escaped.replace(r"\ ", r"\s+") + r"\.?", re.IGNORECASE | re.DOTALL)


_PARTS_PATTERNS = tuple(_template_regex(t, "body_parts") for t in HCONTACT_PARTS_ANSWERS)
_AFFORD_PATTERNS = tuple(_template_regex(t, "affordance") for t in OAFFORD_AFFORD_ANSWERS)
_SEG_RE = re.compile(r"\[(?:SEG|HSEG|OSEG)\]")


def _split_parts(text: str) -> tuple[str, ...]:
    text = text.strip().strip("<>").strip()
    parts = re.split(r",\s*|\s+and\s+", text)
    return tuple(p.strip().strip("<>").strip() for p in parts if p.strip().strip("<>").strip())


def parse_answer(text: str) -> ParsedAnswer:
    """Body-part names (`parts` template) or the affordance (`afford` template) from a generated answer."""
    segs = tuple(_SEG_RE.findall(text))
    for pattern in _PARTS_PATTERNS:
        match = pattern.search(text)
        if match:
            return ParsedAnswer(body_parts=_split_parts(match.group("body_parts")), seg_tokens=segs)
    for pattern in _AFFORD_PATTERNS:
        match = pattern.search(text)
        if match:
            return ParsedAnswer(affordance=match.group("affordance").strip(), seg_tokens=segs)
    return ParsedAnswer(seg_tokens=segs)
