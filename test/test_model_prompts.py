"""Prompt templates, the demo prompt string and answer parsing (no model needed)."""

from __future__ import annotations

import pytest

from ivlm_core.errors import InvalidInputError
from ivlm_core.model import prompts


def test_demo_prompt_string() -> None:
    question = prompts.human_contact_question("tennis_racket")
    assert question == "Which body parts are in contact with the tennis_racket? Segment these contact areas."
    assert prompts.build_prompt(question) == (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions. USER: <im_start><image><im_end>\n"
        + question
        + " ASSISTANT:"
    )
    assert prompts.human_contact_question("scene", "simple").startswith("Segment the area on the human's body")
    # the object demo's stray quote and comma are not part of the question
    assert prompts.object_contact_question("chair").startswith("What type of affordance")
    assert not prompts.object_contact_question("chair").endswith('",')
    with pytest.raises(InvalidInputError):
        prompts.human_contact_question("cup", "long")
    with pytest.raises(InvalidInputError):
        prompts.human_contact_question("  ")


def test_object_name_from_filename() -> None:
    assert prompts.object_name_from_filename("/data/Tennis_Racket__000123.jpg") == "tennis_racket"
    assert prompts.object_name_from_filename("scene__x.png") == "scene"
    with pytest.raises(InvalidInputError):
        prompts.object_name_from_filename("frame_0001.jpg")


@pytest.mark.parametrize("template", prompts.HCONTACT_PARTS_ANSWERS)
def test_parse_every_parts_template(template: str) -> None:
    text = template.format(body_parts="left_hand, right_foot, hips", TOKEN="[SEG]")
    parsed = prompts.parse_answer(text.replace("[SEG].", "[SEG] ."))  # 4.31 decode spaces the token
    assert parsed.body_parts == ("left_hand", "right_foot", "hips")
    assert parsed.seg_tokens == ("[SEG]",)


@pytest.mark.parametrize("template", prompts.OAFFORD_AFFORD_ANSWERS)
def test_parse_every_affordance_template(template: str) -> None:
    parsed = prompts.parse_answer(template.format(affordance="grasp", TOKEN="[OSEG]"))
    assert parsed.affordance == "grasp" and parsed.body_parts == () and parsed.seg_tokens == ("[OSEG]",)


def test_parse_simple_and_empty_answers() -> None:
    assert prompts.parse_answer("Sure, the contact mask is [HSEG].") == prompts.ParsedAnswer(seg_tokens=("[HSEG]",))
    assert prompts.parse_answer("I cannot see any contact.") == prompts.ParsedAnswer()


class _CharPieces:
    """A stand-in SentencePiece: one id per character, dummy prefix as '_' (id 95)."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in "_" + text.replace(" ", "_")]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids).replace("_", " ").strip()


def test_added_tokens_strip_neighbouring_whitespace_and_image_sentinel() -> None:
    tok = prompts.PromptTokenizer(_CharPieces(), {"<im_start>": 1001, "<im_end>": 1002, "[SEG]": 1000})
    ids = tok.encode_with_image("ab <im_start><image><im_end>\ncd")
    # chunk 1: BOS, "_ab" (trailing space stripped), <im_start>; chunk 2 loses its BOS; "\n" stripped
    assert ids == [1, 95, 97, 98, 1001, prompts.IMAGE_TOKEN_INDEX, 1002, 95, 99, 100]
    assert tok.decode([97, 1000, 2]) == "a [SEG] </s>"
    with pytest.raises(InvalidInputError):
        tok.encode_with_image("no image here")
