"""Draft tokens for lossless draft-and-verify decoding, taken from InteractVLM's answer templates.

InteractVLM answers follow its training templates almost word for word ("The contacting body parts are
leftHand, rightHand, and the contact region is [SEG]."); only the slot (body parts, affordance) changes. So
the next tokens are usually predictable without a second model: `TemplateDrafter` holds a token trie of
every answer the templates produce (answer lists x body-part names x affordance names x mask token),
tokenised with the checkpoint's own tokenizer, and proposes the most frequent continuation of the answer so
far. The decoder verifies a draft in one forward and keeps only what greedy decoding would have produced,
so a bad draft costs time, never correctness.

Where the answer leaves the trie (a second body part in a list, a part name the trie does not know) the
drafter re-anchors on the longest suffix of the answer that ends at a trie node, preferring nodes of the
template the answer started in; failing that it falls back to prompt lookup (the longest n-gram of the answer's
tail found earlier in the prompt or the answer, and what followed it there).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ivlm_core.errors import InvalidInputError
from ivlm_core.model import prompts
from ivlm_core.model.prompts import PromptTokenizer

AFFORDANCE_NAMES = (
    "grasp", "contain", "lift", "open", "lay", "sit", "support", "wrapgrasp", "pour", "move", "display", "push",
    "listen", "wear", "press", "cut", "stab", "pull", "ride", "play", "carry",
)  # fmt: skip
"""Affordance labels of the PIAD and LEMON training sets (the `{affordance}` slot of the afford answers)."""

OBJECT_SIMPLE_ANSWERS = (
    "It is {TOKEN}.",
    "Sure, the object contact region is {TOKEN}.",
    "Sure, the contact points on object is {TOKEN}.",
    "Sure, the contact mask is {TOKEN}.",
    "{TOKEN}.",
)
"""The reference's object-contact (PICO) and plain affordance answer list (`OCONTACT_ANSWER_LIST`)."""

SEGMENTATION_FILE = "smpl_segmentation_merged.pkl"
"""The reference's body-part segmentation (part name -> SMPL vertex ids, in data.zip's data/ folder); its
keys are the names the `parts` answers list, in its order."""

_PLACEHOLDERS = ("hand", "foot")  # two slot fillers that differ in their first and last token


def load_body_part_names(path: str | Path) -> tuple[str, ...]:
    """The part names (dict keys, in file order) of `smpl_segmentation_merged.pkl`, read by the allow-listed
    unpickler (a data file never runs code)."""
    from ivlm_core.safe_pickle import load_data_pickle

    data = load_data_pickle(
        path, "body-part segmentation (smpl_segmentation_merged.pkl)",
        "It is data/smpl_segmentation_merged.pkl of the InteractVLM data.zip; without it the drafter drafts the "
        "template text only.",
    )
    if not isinstance(data, Mapping) or not data or not all(isinstance(k, str) and k.strip() for k in data):
        raise InvalidInputError(f"'{path}' is not a mapping of body-part names to vertex ids")
    return tuple(str(k) for k in data)


def find_body_part_names(*folders: str | Path | None) -> tuple[str, ...] | None:
    """The part names of the first `smpl_segmentation_merged.pkl` in the given folders (or their data/);
    None when no folder has one (the drafter then leaves the part slot to prompt lookup)."""
    for folder in folders:
        if folder is None:
            continue
        for candidate in (Path(folder) / SEGMENTATION_FILE, Path(folder) / "data" / SEGMENTATION_FILE):
            if candidate.is_file():
                return load_body_part_names(candidate)
    return None


@dataclass(eq=False)
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    count: float = 0.0  # answers through this node, each template weighing 1 in all
    templates: int = 0  # bit t set: template t passes through this node


def part_lists(parts: Sequence[str], longest: int = 2) -> tuple[str, ...]:
    """The `{body_parts}` slot values the trie holds: every part alone and every ordered pair, ', '-joined.

    The reference lists the touched parts in the segmentation file's order, so after a part the next one is
    a later one, and early parts start lists more often; pairs put exactly that into the trie's branch counts
    (`model_latency --draft`'s 200 drawn answers, its 13B-bench tokenizer: 8.04 -> 6.89 forwards for the
    25-35-token ones). Longer lists re-anchor on the last pair; all triples would multiply the trie by the
    number of parts / 3 for another ~0.4 forwards.
    """
    values = [*parts]
    for size in range(2, longest + 1):
        values += [", ".join(c) for c in itertools.combinations(parts, size)]
    return tuple(values)


@dataclass(frozen=True)
class AnswerTemplate:
    """One answer template with its mask token and the values its slot takes (none: slot unknown)."""

    text: str
    token: str
    slot: str | None = None  # "body_parts" | "affordance"
    values: tuple[str, ...] = ()
    questions: tuple[str, ...] = ()  # the question list this answer list was trained with


class TemplateDrafter:
    """Token trie of the template answers + suffix re-anchoring + prompt lookup. Host-side, torch-free.

    `propose(answer, k, prompt)` returns up to k tokens that likely follow `answer` (the tokens generated so
    far, the last one included). It never affects the result, only how many tokens a forward accepts.
    """

    def __init__(self, sequences: Sequence[tuple[Sequence[int], int]], context: int = 6, lookup_ngram: int = 3):
        self.root = _Node()
        self.context = int(context)
        self.lookup_ngram = int(lookup_ngram)
        self._index: dict[tuple[int, ...], list[_Node]] = {}
        self._questions: list[tuple[tuple[int, ...], int]] = []  # (question head ids, template mask)
        self._prompt_masks: dict[tuple[int, ...], int] = {}
        per_template: dict[int, int] = {}
        for _, template in sequences:
            per_template[int(template)] = per_template.get(int(template), 0) + 1
        for ids, template in sequences:  # a template weighs the same whatever the number of its slot values
            self._insert([int(i) for i in ids], int(template), 1.0 / per_template[int(template)])
        self.num_sequences = len(sequences)

    # ---------------------------------------------------------------------------------------- building
    @classmethod
    def from_templates(cls, tokenizer: PromptTokenizer, templates: Sequence[AnswerTemplate], eos_id: int,
                       **kwargs) -> TemplateDrafter:
        """Tokenise every answer the templates produce (all slot values; a template whose slot values are
        unknown contributes the text before and after the slot as two pieces)."""
        sequences: list[tuple[list[int], int]] = []
        heads: dict[tuple[int, ...], int] = {}
        for t, template in enumerate(templates):
            for question in template.questions:  # the question up to the object name identifies the list
                head = tuple(tokenizer.encode(question.split("{", 1)[0].rstrip(), add_bos=False)[1:])
                if head:
                    heads[head] = heads.get(head, 0) | 1 << t
            fill = {"TOKEN": template.token}
            if template.slot is None:
                sequences.append(([*tokenizer.encode(template.text.format(**fill), add_bos=False), eos_id], t))
                continue
            if template.values:
                for value in template.values:
                    text = template.text.format(**fill, **{template.slot: value})
                    sequences.append(([*tokenizer.encode(text, add_bos=False), eos_id], t))
                continue
            a, b = (tokenizer.encode(template.text.format(**fill, **{template.slot: p}), add_bos=False)
                    for p in _PLACEHOLDERS)
            head = 0
            while head < min(len(a), len(b)) and a[head] == b[head]:
                head += 1
            tail = 0
            while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
                tail += 1
            sequences.append((a[:head], t))
            if tail:
                sequences.append(([*a[len(a) - tail :], eos_id], t))
        drafter = cls(sequences, **kwargs)
        drafter._questions = sorted(heads.items(), key=lambda kv: -len(kv[0]))
        return drafter

    @classmethod
    def for_model(cls, tokenizer: PromptTokenizer, token_type: str, eos_id: int,
                  body_parts: Sequence[str] | None = None, affordances: Sequence[str] = AFFORDANCE_NAMES,
                  **kwargs) -> TemplateDrafter:
        """Every answer list of the reference with the mask tokens of `token_type` ('Gen': [SEG]; 'Gen-Hu-Obj':
        [HSEG] for human answers, [OSEG] for object answers). `body_parts`: the names of the user's
        segmentation file, joined ', ' in answers; None: the part slot is left to prompt lookup."""
        joint = token_type.startswith("Gen-Hu-Obj")
        human = prompts.HSEG_TOKEN if joint else prompts.SEG_TOKEN
        obj = prompts.OSEG_TOKEN if joint else prompts.SEG_TOKEN
        parts = part_lists(tuple(body_parts or ()))
        p = prompts
        templates = [AnswerTemplate(t, human, "body_parts", parts, p.HCONTACT_PARTS_QUESTIONS)
                     for t in p.HCONTACT_PARTS_ANSWERS]
        templates += [AnswerTemplate(t, human, questions=p.HCONTACT_SIMPLE_QUESTIONS)
                      for t in p.HCONTACT_SIMPLE_ANSWERS]
        templates += [AnswerTemplate(t, obj, "affordance", tuple(affordances), p.OAFFORD_AFFORD_QUESTIONS)
                      for t in p.OAFFORD_AFFORD_ANSWERS]
        templates += [AnswerTemplate(t, obj, questions=p.OCONTACT_QUESTIONS) for t in OBJECT_SIMPLE_ANSWERS]
        return cls.from_templates(tokenizer, templates, eos_id, **kwargs)

    def _insert(self, ids: list[int], template: int, weight: float) -> None:
        node = self.root
        node.count += weight
        for depth, token in enumerate(ids, start=1):
            child = node.children.get(token)
            if child is None:
                child = node.children[token] = _Node()
                for n in range(1, min(self.context, depth) + 1):  # index the node by its path's last n tokens
                    self._index.setdefault(tuple(ids[depth - n : depth]), []).append(child)
            child.count += weight
            child.templates |= 1 << template
            node = child

    # ---------------------------------------------------------------------------------------- drafting
    def _question_mask(self, prompt: Sequence[int]) -> int:
        """Templates of the answer list that belongs to the question in `prompt` (0: not recognised)."""
        key = tuple(int(t) for t in prompt)
        if key not in self._prompt_masks:
            mask = 0
            for head, templates in self._questions:
                n = len(head)
                if any(key[i : i + n] == head for i in range(len(key) - n + 1)):
                    mask = templates
                    break
            if len(self._prompt_masks) >= 256:  # a long-running node sees new object names: stay bounded
                self._prompt_masks.clear()
            self._prompt_masks[key] = mask
        return self._prompt_masks[key]

    def _anchor(self, answer: Sequence[int], prompt: Sequence[int] = ()) -> tuple[_Node | None, int]:
        """The trie node to continue from and the template mask to prefer there."""
        node, hint = self.root, self._question_mask(prompt) if prompt else 0
        for token in answer:
            nxt = node.children.get(int(token))
            if nxt is None:
                break
            node = nxt
            hint = node.templates & hint or node.templates
        else:
            return (node if node.children else None), hint
        for n in range(min(self.context, len(answer)), 0, -1):  # re-anchor on the longest known suffix
            candidates = [c for c in self._index.get(tuple(int(t) for t in answer[-n:]), ()) if c.children]
            if candidates:
                return max(candidates, key=lambda c: (bool(c.templates & hint), c.count)), hint
        return None, hint

    def _from_trie(self, answer: Sequence[int], k: int, prompt: Sequence[int]) -> list[int]:
        node, hint = self._anchor(answer, prompt)
        draft: list[int] = []
        while node is not None and node.children and len(draft) < k:
            token, node = max(node.children.items(), key=lambda kv: (bool(kv[1].templates & hint), kv[1].count))
            draft.append(token)
        return draft

    def _from_lookup(self, answer: Sequence[int], k: int, prompt: Sequence[int]) -> list[int]:
        history = [int(t) for t in prompt if int(t) >= 0] + [int(t) for t in answer]
        for n in range(min(self.lookup_ngram, len(answer)), 0, -1):
            tail = history[-n:]
            for start in range(len(history) - n - 1, -1, -1):  # most recent earlier occurrence first
                if history[start : start + n] == tail:
                    return history[start + n : start + n + k]
        return []

    def propose(self, answer: Sequence[int], k: int, prompt: Sequence[int] = ()) -> list[int]:
        """Up to k draft tokens to follow `answer` (the generated tokens so far, at least one)."""
        if k <= 0 or not answer:
            return []
        return self._from_trie(answer, k, prompt) or self._from_lookup(answer, k, prompt)

    def replay(self, answer: Sequence[int], k: int, prompt: Sequence[int] = ()) -> tuple[int, int]:
        """(verify forwards, accepted draft tokens) the draft-and-verify loop needs when the model's greedy
        answer is `answer`: the first token comes from the prefill, then each forward accepts the drafts
        that match the answer plus the model's own next token, with the decoder's `DraftLength` policy.
        Model-free: measures the drafter."""
        answer = [int(t) for t in answer]
        done, forwards, accepted = 1, 0, 0
        length = DraftLength(k)
        while done < len(answer):
            draft = self.propose(answer[:done], length.next(), prompt)
            match = 0
            while match < len(draft) and done + match < len(answer) and draft[match] == answer[done + match]:
                match += 1
            length.update(len(draft), match)
            take = min(match + 1, len(answer) - done)
            forwards += 1
            accepted += min(match, take)
            done += take
        return forwards, accepted


class DraftLength:
    """How many tokens one row drafts next. A rejected draft is not free: its tokens widen the verify forward
    (on a GPU a 9-token forward costs more than a 1-token one). A single rejected draft is normal on template
    answers (the first token of a body-part name the trie ranked second), so the length stays at `max_draft`
    until drafts are rejected outright twice in a row; then it halves with each further miss, and at 0 the row
    decodes plainly, probing with one drafted token every `probe_every` forwards. Any accepted token restores
    `max_draft`. On an answer the templates do not predict, the cost thus falls back to plain decoding's."""

    def __init__(self, max_draft: int, probe_every: int = 4) -> None:
        self.max_draft = int(max_draft)
        self.probe_every = int(probe_every)
        self.misses = 0
        self.idle = 0

    def next(self) -> int:
        length = self.max_draft >> max(0, self.misses - 1)
        if length > 0:
            return length
        self.idle += 1
        return 1 if self.idle > self.probe_every else 0

    def update(self, drafted: int, accepted: int) -> None:
        """Record how many of the `drafted` tokens the model accepted."""
        if drafted <= 0:
            return
        self.idle = 0
        self.misses = self.misses + 1 if accepted == 0 else 0
