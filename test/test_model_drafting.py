"""Draft-and-verify decoding (issue 13): the template drafter, and exactness against plain greedy decoding on the
tiny fp32 model for every answer shape (the LM head is re-wired per test to give that answer).

Exactness must hold whatever the drafts are; the wiring only decides how many of them are accepted.
"""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import torch

from ivlm_core.model import prompts
from ivlm_core.model.drafting import OBJECT_SIMPLE_ANSWERS, TemplateDrafter, load_body_part_names
from ivlm_core.model.predictor import HumanContactResult, ObjectContactResult
from ivlm_core.model.prompts import human_contact_question, object_contact_question

PARTS = ("hands", "feet", "left_hand", "right_hand", "hips", "back", "left_foot")
WIRE_STRENGTH = 120.0  # > the checkpoint's own chain (40), so the re-wired answer wins


def _photo(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((40, 52, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def gen_model(private_tiny_models):
    """A private Gen model (its LM head is re-wired by the tests; the shared fixture stays untouched)."""
    return private_tiny_models["Gen"]


@pytest.fixture(scope="module")
def joint_model(private_tiny_models):
    return private_tiny_models["Gen-Hu-Obj"]


class _Wired:
    """Temporarily wire greedy decoding after 'ASSISTANT:' to `answer` (+ EOS) by a bigram chain; a token
    repeated with another successor keeps its first one (the model then leaves the template there)."""

    def __init__(self, model, answer: str) -> None:
        self.model, self.answer = model, answer
        llm = model.model.llava.llm
        self.emb, self.head = llm.get_input_embeddings().weight, llm.lm_head.weight

    def __enter__(self) -> list[int]:
        tok = self.model.processor.prompt_tokenizer
        self.saved = self.emb.detach().clone(), self.head.detach().clone()
        start = tok.encode("ASSISTANT:", add_bos=False)
        ids = tok.encode("ASSISTANT: " + self.answer, add_bos=False)
        chain = [*ids[len(start) - 1 :], self.model.token_ids.eos]
        successors: dict[int, int] = {}
        for prev, nxt in itertools.pairwise(chain):
            successors.setdefault(prev, nxt)
        with torch.no_grad():
            for prev, nxt in successors.items():
                self.emb[prev] *= 30.0 / self.emb[prev].norm()
                self.head[nxt] += WIRE_STRENGTH * self.emb[prev] / self.emb[prev].norm()
        return ids[len(start) :]

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            self.emb.copy_(self.saved[0])
            self.head.copy_(self.saved[1])


def _decode(model, questions, drafting: bool, max_new: int = 40, stop_at_mask: bool = True, seed: int = 0):
    llava = model.model.llava
    model.set_drafting(drafting, 8, PARTS)
    try:
        pixels = model.processor.preprocess_image(_photo(seed))
        ids = [model.processor.prompt_ids(q) for q in questions]
        return llava.generate_static(ids, pixels, model.config.seg_token_ids, model.token_ids.eos, max_new,
                                     stop_at_mask=stop_at_mask)
    finally:
        model.set_drafting(False)


def _assert_same(plain, drafted) -> None:
    for p, d in zip(plain, drafted, strict=True):
        assert d.generated_ids == p.generated_ids
        assert (d.stop_reason, d.seg_index, d.seg_token_id) == (p.stop_reason, p.seg_index, p.seg_token_id)
        if p.seg_hidden is None:
            assert d.seg_hidden is None
        else:
            torch.testing.assert_close(d.seg_hidden, p.seg_hidden, atol=1e-5, rtol=0)


def _parts_answers(token: str) -> list[str]:
    answers = [t.format(body_parts="hands", TOKEN=token) for t in prompts.HCONTACT_PARTS_ANSWERS]
    answers += [prompts.HCONTACT_PARTS_ANSWERS[0].format(body_parts=", ".join(PARTS[:n]), TOKEN=token)
                for n in range(2, 7)]
    return answers


ANSWERS = (
    _parts_answers("[SEG]")
    + [t.format(TOKEN="[SEG]") for t in prompts.HCONTACT_SIMPLE_ANSWERS]
    + [t.format(affordance="grasp", TOKEN="[SEG]") for t in prompts.OAFFORD_AFFORD_ANSWERS]
    + [t.format(TOKEN="[SEG]") for t in OBJECT_SIMPLE_ANSWERS]
    + ["The contacting body parts are hands, and nothing else."]  # no mask token: runs to EOS
)


# ---------------------------------------------------------------------------------------------- drafter
@pytest.fixture(scope="module")
def tokenizer(gen_model):
    return gen_model.processor.prompt_tokenizer


def test_drafter_continues_the_template_and_its_part_list(tokenizer) -> None:
    drafter = TemplateDrafter.for_model(tokenizer, "Gen", 2, PARTS)
    template = prompts.HCONTACT_PARTS_ANSWERS[3]  # "... are {body_parts}, with contact mask at {TOKEN}."
    full = tokenizer.encode(template.format(body_parts="hips, back, feet", TOKEN="[SEG]"), add_bos=False)
    start = len(tokenizer.encode("The body parts in contact are", add_bos=False))
    assert drafter.propose(full[:2], 3) == full[2:5]  # inside the template text
    assert len(drafter.propose(full[:start], 40)) <= 40
    # after the last part's comma: the suffix of the template the answer started in, not another template's
    comma = len(tokenizer.encode("The body parts in contact are hips, back, feet,", add_bos=False))
    assert drafter.propose(full[:comma], 9) == [*full[comma:], 2]  # through EOS
    assert drafter.propose(full[:comma], 2) == full[comma : comma + 2]
    assert drafter.propose(full, 0) == [] and drafter.propose([], 4) == []


def test_drafter_without_part_names_drafts_the_template_and_looks_up_the_prompt(tokenizer) -> None:
    drafter = TemplateDrafter.for_model(tokenizer, "Gen", 2, None)
    answer = tokenizer.encode(prompts.HCONTACT_PARTS_ANSWERS[0].format(body_parts="hips", TOKEN="[SEG]"),
                              add_bos=False)
    comma = len(tokenizer.encode("The contacting body parts are hips,", add_bos=False))
    assert drafter.propose(answer[:2], 3) == answer[2:5]
    assert drafter.propose(answer[:comma], 9) == [*answer[comma:], 2]
    # prompt lookup: the answer's tail found in the prompt, what followed it there is proposed
    prompt = [5, 6, 7, 8, 9, 10]
    assert drafter.propose([900, 7, 8], 2, prompt) == [9, 10]


def test_drafter_uses_the_mask_tokens_of_the_token_type(joint_model) -> None:
    tokenizer = joint_model.processor.prompt_tokenizer
    hseg, oseg = tokenizer.added_tokens["[HSEG]"], tokenizer.added_tokens["[OSEG]"]
    joint = TemplateDrafter.for_model(tokenizer, "Gen-Hu-Obj", 2, PARTS)
    human = tokenizer.encode("Sure, the human contact region is", add_bos=False)
    obj = tokenizer.encode("Sure, the object contact region is", add_bos=False)
    assert joint.propose(human, 2)[0] == hseg
    assert joint.propose(obj, 2)[0] == oseg


def test_body_part_names_are_read_safely(tmp_path) -> None:
    import joblib

    from ivlm_core.errors import InvalidInputError, MissingAssetError

    good = tmp_path / "smpl_segmentation_merged.pkl"
    joblib.dump({name: np.arange(i, i + 3) for i, name in enumerate(PARTS)}, good)
    assert load_body_part_names(good) == PARTS
    hostile = tmp_path / "hostile.pkl"
    hostile.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(InvalidInputError, match=r"os\.system|refusing"):
        load_body_part_names(hostile)
    not_a_dict = tmp_path / "list.pkl"
    not_a_dict.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(InvalidInputError, match="mapping"):
        load_body_part_names(not_a_dict)
    with pytest.raises(MissingAssetError):
        load_body_part_names(tmp_path / "absent.pkl")


# ---------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("answer", ANSWERS, ids=range(len(ANSWERS)))
def test_drafted_equals_plain_greedy_for_every_answer_shape(gen_model, answer: str) -> None:
    """Stopping at the mask token (the production path) and, for the part lists, decoding on to EOS."""
    question = human_contact_question("cup")
    with _Wired(gen_model, answer) as wired:
        for stop in (True, False) if answer in _parts_answers("[SEG]")[5:] else (False,):
            plain = _decode(gen_model, [question], False, stop_at_mask=stop)
            drafted = _decode(gen_model, [question], True, stop_at_mask=stop)
            _assert_same(plain, drafted)
            assert drafted[0].forwards < max(plain[0].forwards, 2)
    generated = plain[0].generated_ids
    if generated[:-1] == wired:  # the wiring reproduced the template answer exactly: drafts must be accepted
        assert drafted[0].accepted_drafts > len(generated) // 2
        assert drafted[0].forwards <= len(generated) // 2


def test_template_answer_is_reproduced_and_drafted_in_few_forwards(gen_model) -> None:
    answer = prompts.HCONTACT_PARTS_ANSWERS[1].format(body_parts="left_hand", TOKEN="[SEG]")
    with _Wired(gen_model, answer) as wired:
        plain = _decode(gen_model, [human_contact_question("cup")], False)[0]
        drafted = _decode(gen_model, [human_contact_question("cup")], True)[0]
    seg = wired.index(gen_model.token_ids.seg)
    assert plain.generated_ids == wired[: seg + 1] and plain.stop_reason == "mask"  # stops at [SEG], before '.'
    assert drafted.generated_ids == plain.generated_ids
    assert drafted.forwards <= 3 < plain.forwards


def test_truncated_answer(gen_model) -> None:
    answer = prompts.HCONTACT_PARTS_ANSWERS[0].format(body_parts="hips, back", TOKEN="[SEG]")
    with _Wired(gen_model, answer):
        for max_new in (1, 2, 5, 9):
            plain = _decode(gen_model, [human_contact_question("cup")], False, max_new=max_new)
            drafted = _decode(gen_model, [human_contact_question("cup")], True, max_new=max_new)
            _assert_same(plain, drafted)
            assert len(drafted[0].generated_ids) == max_new and drafted[0].stop_reason == "length"


def test_masks_and_contacts_equal_plain(gen_model) -> None:
    answer = prompts.HCONTACT_PARTS_ANSWERS[1].format(body_parts="hips", TOKEN="[SEG]")
    with _Wired(gen_model, answer):
        plain = gen_model.predict_human_contact(_photo(2), "cup", template="parts")
        gen_model.set_drafting(True, 8, PARTS)
        try:
            drafted = gen_model.predict_human_contact(_photo(2), "cup", template="parts")
        finally:
            gen_model.set_drafting(False)
    assert isinstance(plain, HumanContactResult) and isinstance(drafted, HumanContactResult)
    assert drafted.language.generated_ids == plain.language.generated_ids
    assert drafted.language.body_parts == plain.language.body_parts
    np.testing.assert_allclose(drafted.view_logits, plain.view_logits, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(drafted.contacts_smplh, plain.contacts_smplh, atol=1e-5)


def test_hseg_oseg_batch_of_two_equals_plain(joint_model) -> None:
    """[HSEG] and [OSEG] answers decoded as one drafted batch (rows accept at different rates)."""
    model = joint_model
    questions = [human_contact_question("chair"), object_contact_question("chair", "contact")]
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64) * 0.3
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    for stop in (True, False):
        plain = _decode(model, questions, False, stop_at_mask=stop, seed=4)
        drafted = _decode(model, questions, True, stop_at_mask=stop, seed=4)
        _assert_same(plain, drafted)
    assert drafted[0].accepted_drafts > 0  # the checkpoint's own wired answer is a template answer
    human, obj = model.predict_interaction(_photo(4), "chair", vertices, faces, max_new_tokens=24, render_size=64)
    model.set_drafting(True, 4, None)
    try:
        d_human, d_obj = model.predict_interaction(_photo(4), "chair", vertices, faces, max_new_tokens=24,
                                                   render_size=64)
    finally:
        model.set_drafting(False)
    assert d_human.language.generated_ids == human.language.generated_ids
    assert d_obj.language.generated_ids == obj.language.generated_ids
    if isinstance(human, HumanContactResult):
        np.testing.assert_allclose(d_human.contacts_smplh, human.contacts_smplh, atol=1e-5)
    if isinstance(obj, ObjectContactResult):
        np.testing.assert_allclose(d_obj.contacts, obj.contacts, atol=1e-5)


def _cup_question(model, photo_seed: int):
    """(llava, prompt ids, pixels, mask-token ids, eos, vocab size) of a human-contact question about a cup."""
    llava = model.model.llava
    ids = model.processor.prompt_ids(human_contact_question("cup"))
    pixels = model.processor.preprocess_image(_photo(photo_seed))
    return llava, ids, pixels, model.config.seg_token_ids, model.token_ids.eos, llava.llm.config.vocab_size


@pytest.mark.parametrize("k", [1, 3, 8])
def test_every_draft_rejected_still_gives_plain_output(gen_model, k: int) -> None:
    """0 % acceptance: a drafter that always proposes wrong tokens costs forwards, never tokens."""
    llava, ids, pixels, seg, eos, vocab = _cup_question(gen_model, 1)
    for stop in (True, False):
        plain = llava.generate_static([ids], pixels, seg, eos, 30, stop_at_mask=stop)[0]
        truth = plain.generated_ids

        def wrong(row: int, answer, n: int, truth=truth) -> list[int]:
            return [(truth[len(answer) + i] + 1) % vocab if len(answer) + i < len(truth) else 3 for i in range(n)]

        with torch.inference_mode():
            embeds = llava.embed(ids, llava.image_features(pixels))[0]
            dec = llava.ensure_decoder(seg, eos, embeds.shape[0], 30)
            res = dec.generate_drafted([embeds], 30, wrong, max_draft=k, stop_at_mask=stop)
        assert res.generated[0] == truth and res.accepted == 0
        assert res.forwards == len(truth) - 1  # one token per forward, as plain decoding
        assert res.seg_index[0] == plain.seg_index
        if plain.seg_hidden is not None:
            torch.testing.assert_close(res.seg_hidden[0], plain.seg_hidden, atol=1e-5, rtol=0)


def test_rows_accepting_at_different_rates_compact_the_cache(joint_model) -> None:
    """Batch of 2 in a cache with little room: row 0 accepts every draft, row 1 none; the holes row 1 leaves
    are closed by compaction and both rows still equal plain greedy decoding."""
    from ivlm_core.model.decoding import StaticDecoder

    model = joint_model
    llava = model.model.llava
    pixels = model.processor.preprocess_image(_photo(6))
    questions = [human_contact_question("chair"), object_contact_question("chair", "contact")]
    seg, eos = model.config.seg_token_ids, model.token_ids.eos
    vocab = llava.llm.config.vocab_size
    with torch.inference_mode():
        feats = llava.image_features(pixels)
        embeds = [llava.embed(model.processor.prompt_ids(q), feats)[0] for q in questions]
        width = max(e.shape[0] for e in embeds)
        dec = StaticDecoder(llava.llm, seg, eos, max_len=width + 14, max_new_tokens=12)
        plain = dec.generate(embeds, 12, stop_at_mask=False)
        truth = plain.generated

        def mixed(row: int, answer, n: int) -> list[int]:
            nxt = [truth[row][len(answer) + i] if len(answer) + i < len(truth[row]) else 3 for i in range(n)]
            return nxt if row == 0 else [(t + 1) % vocab for t in nxt]

        compactions = []
        compact = dec._compact
        dec._compact = lambda *args: (compactions.append(dec.cache.length), compact(*args))
        drafted = dec.generate_drafted(embeds, 12, mixed, max_draft=8, stop_at_mask=False)
    assert drafted.generated == truth and drafted.stop_reason == plain.stop_reason
    assert compactions and drafted.accepted > 0
    for p, d in zip(plain.seg_hidden, drafted.seg_hidden):
        if p is None:
            assert d is None
        else:
            torch.testing.assert_close(d, p, atol=1e-5, rtol=0)


def test_random_answer_with_the_real_drafter_equals_plain(gen_model) -> None:
    """Unwired tokens (garbage for the templates): drafts come from prompt lookup and are mostly rejected."""
    answer = "hips back feet hands hands the the involved mask"
    with _Wired(gen_model, answer):
        plain = _decode(gen_model, [human_contact_question("cup")], False, max_new=40)
        drafted = _decode(gen_model, [human_contact_question("cup")], True, max_new=40)
    _assert_same(plain, drafted)


# ---------------------------------------------------------------------------------------------- CUDA only
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_graph_drafted_equals_plain(tiny_checkpoints, tiny_body_assets, dtype) -> None:
    from ivlm_core.model.checkpoint import load_checkpoint

    assets, transfer, _ = tiny_body_assets
    model = load_checkpoint(tiny_checkpoints["Gen-Hu-Obj"], device="cuda", dtype=dtype, human_assets=assets,
                            contact_transfer=transfer, object_render_size=64)
    model.set_drafting(True, 8, PARTS)
    model.prepare()
    dec = model.model.llava.decoder
    assert dec.captured_verify == tuple((b, k) for b in (1, 2) for k in (0, 2, 4, 8))
    questions = [human_contact_question("chair"), object_contact_question("chair", "contact")]
    pixels = model.processor.preprocess_image(_photo(1))
    ids = [model.processor.prompt_ids(q) for q in questions]
    seg, eos = model.config.seg_token_ids, model.token_ids.eos
    for stop in (True, False):
        drafted = model.model.llava.generate_static(ids, pixels, seg, eos, 40, stop_at_mask=stop)
        model.model.llava.drafter = None
        plain = model.model.llava.generate_static(ids, pixels, seg, eos, 40, stop_at_mask=stop)
        model.set_drafting(True, 8, PARTS)
        for p, d in zip(plain, drafted):
            assert d.generated_ids == p.generated_ids
            if p.seg_hidden is not None:
                tol = 1e-4 if dtype == torch.float32 else 0.05
                torch.testing.assert_close(d.seg_hidden.float(), p.seg_hidden.float(), atol=tol, rtol=0.02)
    assert drafted[0].accepted_drafts > 0


@pytest.mark.cuda
def test_cuda_drafting_switched_on_after_warm_up_captures_its_verify_graphs(tiny_checkpoints, tiny_body_assets) -> None:
    from ivlm_core.model.checkpoint import load_checkpoint

    assets, transfer, _ = tiny_body_assets
    model = load_checkpoint(tiny_checkpoints["Gen"], device="cuda", dtype=torch.bfloat16, human_assets=assets,
                            contact_transfer=transfer)
    model.prepare()
    dec = model.model.llava.decoder
    assert dec.captured_verify == ()
    assert dec.kernels.compiled and dec.kernels.failure is None  # 'auto' compiles the layer glue on CUDA
    model.set_drafting(True, 4, PARTS)
    assert dec.captured_verify == tuple((b, k) for b in (1, 2) for k in (0, 2, 4))


def test_draft_length_backs_off_on_rejections_and_recovers_on_acceptance() -> None:
    from ivlm_core.model.drafting import DraftLength

    length = DraftLength(8, probe_every=2)
    seen = []
    for _ in range(9):  # every draft rejected
        k = length.next()
        seen.append(k)
        length.update(k, 0)
    assert seen == [8, 8, 4, 2, 1, 0, 0, 1, 0]  # one miss is normal on templates; then halve, then probe
    length.update(1, 1)  # the probe's token accepted: full drafts again
    assert length.next() == 8
    length.update(8, 0)
    length.update(8, 3)  # a partial acceptance also restores
    assert length.next() == 8


def test_all_rejected_drafting_shrinks_its_verify_width(gen_model) -> None:
    """The decoder follows DraftLength: a run of wholly rejected drafts stops widening the verify forwards."""
    llava, ids, pixels, seg, eos, vocab = _cup_question(gen_model, 2)
    truth = llava.generate_static([ids], pixels, seg, eos, 30, stop_at_mask=False)[0].generated_ids
    asked: list[int] = []

    def wrong(row: int, answer, n: int) -> list[int]:
        asked.append(n)
        return [(truth[len(answer) + i] + 1) % vocab if len(answer) + i < len(truth) else 3 for i in range(n)]

    with torch.inference_mode():
        embeds = llava.embed(ids, llava.image_features(pixels))[0]
        dec = llava.ensure_decoder(seg, eos, embeds.shape[0], 30)
        res = dec.generate_drafted([embeds], 30, wrong, max_draft=8, stop_at_mask=False)
    assert res.generated[0] == truth
    assert len(truth) > 8 and asked[:6] == [8, 8, 4, 2, 1, 0]


def test_part_lists_hold_every_part_and_every_ordered_pair() -> None:
    from ivlm_core.model.drafting import part_lists

    assert part_lists(("hips", "back", "feet")) == ("hips", "back", "feet", "hips, back", "hips, feet", "back, feet")
    assert part_lists(()) == ()


def test_drafter_drafts_a_later_part_after_a_part(tokenizer) -> None:
    """Parts come in segmentation order: after the first part's comma a list goes on with a later part more often
    than it ends, and the ordered pairs in the trie say so."""
    drafter = TemplateDrafter.for_model(tokenizer, "Gen", 2, PARTS)
    head = prompts.HCONTACT_PARTS_ANSWERS[0].split("{body_parts}")[0]
    answer = tokenizer.encode(head + f"{PARTS[0]},", add_bos=False)
    text = tokenizer.decode(answer + drafter.propose(answer, 6))
    assert any(text.startswith(f"{head}{PARTS[0]}, {p}") for p in PARTS[1:]), text
