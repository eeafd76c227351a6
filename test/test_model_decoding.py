"""The static-cache decoder (issue 9) against the eager DynamicCache and naive decoders on the tiny model.

CPU tests run the decoder eagerly; the `cuda` tests run the CUDA-graph path and skip without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ivlm_core.model.predictor import HumanContactResult, ObjectContactResult
from ivlm_core.model.prompts import human_contact_question, object_contact_question

TORCHAO_SKIP = (
    "torchao is optional and not installed: installed, transformers imports it in every process (about 1 "
    "s, 20 s on a loaded CPU); pip install torchao==0.18.0 to run this test"
)


def _photo(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((40, 52, 3)) * 255).astype(np.uint8)


def _object_mesh() -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    mesh = trimesh.creation.box(extents=(0.4, 0.3, 0.2))
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def _ids_and_pixels(model, question: str, seed: int = 0):
    ids = model.processor.prompt_ids(question)
    return ids, model.processor.preprocess_image(_photo(seed))


def _three_decoders(model, question: str, seed: int, max_new: int = 40):
    ids, pixels = _ids_and_pixels(model, question, seed)
    seg, eos = model.config.seg_token_ids, model.token_ids.eos
    static = model.model.llava.generate_static([ids], pixels, seg, eos, max_new, stop_at_mask=False)[0]
    eager = model.model.llava.generate_cached(ids, pixels, seg, eos, max_new)
    naive = model.model.llava.generate_naive(ids, pixels, seg, eos, max_new)
    return static, eager, naive


@pytest.mark.parametrize("seed", [0, 3])
def test_static_equals_eager_and_naive_fp32(tiny_model_gen, seed: int) -> None:
    static, eager, naive = _three_decoders(tiny_model_gen, human_contact_question("cup"), seed)
    assert static.generated_ids == eager.generated_ids == naive.generated_ids
    assert static.seg_index == eager.seg_index == naive.seg_index is not None
    assert static.stop_reason == "eos"
    torch.testing.assert_close(static.seg_hidden, eager.seg_hidden, atol=1e-5, rtol=0)
    torch.testing.assert_close(static.seg_hidden, naive.seg_hidden, atol=1e-5, rtol=0)


def test_static_equals_eager_bf16(tiny_checkpoints, tiny_body_assets) -> None:
    from ivlm_core.model.checkpoint import load_checkpoint

    assets, _, _ = tiny_body_assets
    model = load_checkpoint(tiny_checkpoints["Gen"], device="cpu", dtype=torch.bfloat16, human_assets=assets)
    static, eager, _ = _three_decoders(model, human_contact_question("cup"), 0)
    assert static.generated_ids == eager.generated_ids
    assert static.seg_hidden.dtype == torch.bfloat16
    torch.testing.assert_close(static.seg_hidden.float(), eager.seg_hidden.float(), atol=0.05, rtol=0.02)


def test_length_stop_and_no_mask_token(tiny_model_gen) -> None:
    ids, pixels = _ids_and_pixels(tiny_model_gen, human_contact_question("cup"))
    seg, eos = tiny_model_gen.config.seg_token_ids, tiny_model_gen.token_ids.eos
    out = tiny_model_gen.model.llava.generate_static([ids], pixels, seg, eos, 3)[0]
    eager = tiny_model_gen.model.llava.generate_cached(ids, pixels, seg, eos, 3)
    assert out.generated_ids == eager.generated_ids and len(out.generated_ids) == 3
    assert out.stop_reason == "length" and out.seg_hidden is None


def test_stop_at_mask_gives_the_same_masks_and_contacts(tiny_model_gen) -> None:
    model = tiny_model_gen
    image = _photo(5)
    stopped = model.predict_human_contact(image, "cup", template="parts")
    full = model.predict_human_contact(image, "cup", template="parts", stop_at_mask=False)
    assert isinstance(stopped, HumanContactResult) and isinstance(full, HumanContactResult)
    seg_index = stopped.language.seg_index
    assert stopped.language.generated_ids == full.language.generated_ids[: seg_index + 1]
    assert full.language.generated_ids[-1] == model.token_ids.eos and len(full.language.generated_ids) > seg_index + 1
    assert stopped.language.body_parts == full.language.body_parts
    np.testing.assert_array_equal(stopped.view_logits, full.view_logits)
    np.testing.assert_array_equal(stopped.contacts_smplh, full.contacts_smplh)


def test_batched_two_questions_equal_two_single_passes(tiny_model_joint) -> None:
    model = tiny_model_joint
    ids_h, pixels = _ids_and_pixels(model, human_contact_question("chair"), 2)
    ids_o = model.processor.prompt_ids(object_contact_question("chair", "contact"))
    assert len(ids_h) != len(ids_o)  # really right-padded
    seg, eos = model.config.seg_token_ids, model.token_ids.eos
    for stop in (True, False):
        llava = model.model.llava
        pair = llava.generate_static([ids_h, ids_o], pixels, seg, eos, 30, stop_at_mask=stop)
        singles = [llava.generate_static([i], pixels, seg, eos, 30, stop_at_mask=stop)[0] for i in (ids_h, ids_o)]
        for b, s in zip(pair, singles):
            assert b.generated_ids == s.generated_ids and b.stop_reason == s.stop_reason
            assert b.seg_index == s.seg_index and b.seg_token_id == s.seg_token_id
            if s.seg_hidden is None:
                assert b.seg_hidden is None
            else:
                torch.testing.assert_close(b.seg_hidden, s.seg_hidden, atol=1e-5, rtol=0)


def test_interaction_pass_equals_the_two_task_calls(tiny_model_joint) -> None:
    model = tiny_model_joint
    image = _photo(7)
    vertices, faces = _object_mesh()
    human, obj = model.predict_interaction(image, "chair", vertices, faces, max_new_tokens=24, render_size=64)
    alone_h = model.predict_human_contact(image, "chair", max_new_tokens=24)
    alone_o = model.predict_object_contact(image, "chair", vertices, faces, max_new_tokens=24, render_size=64)
    assert type(human) is type(alone_h) and type(obj) is type(alone_o)
    assert human.language.generated_ids == alone_h.language.generated_ids
    assert obj.language.generated_ids == alone_o.language.generated_ids
    if isinstance(human, HumanContactResult):
        np.testing.assert_allclose(human.contacts_smplh, alone_h.contacts_smplh, atol=1e-5)
    if isinstance(obj, ObjectContactResult):
        np.testing.assert_allclose(obj.contacts, alone_o.contacts, atol=1e-5)


def test_static_paths_report_truncated_answers(tiny_model_gen, tiny_model_joint) -> None:
    """An answer cut at max_new_tokens before its mask token is "truncated" on the static decoder, single and
    batch of 2 (each row its own status), as on the eager one."""
    assert tiny_model_gen.decoding == "static"
    cut = tiny_model_gen.predict_human_contact(_photo(), "cup", max_new_tokens=3)
    assert not cut.found and cut.status == "truncated"
    assert cut.message == "answer truncated at 3 tokens (max_new_tokens)"
    model = tiny_model_joint
    vertices, faces = _object_mesh()
    human, obj = model.predict_interaction(_photo(7), "chair", vertices, faces, max_new_tokens=2, render_size=64)
    for row in (human, obj):
        assert not row.found and row.status == "truncated", (row.status, row.language.generated_ids)
        assert row.message == "answer truncated at 2 tokens (max_new_tokens)"
    human, obj = model.predict_interaction(_photo(7), "chair", vertices, faces, max_new_tokens=24, render_size=64)
    alone_h = model.predict_human_contact(_photo(7), "chair", max_new_tokens=24)
    alone_o = model.predict_object_contact(_photo(7), "chair", vertices, faces, max_new_tokens=24, render_size=64)
    assert human.language.status == alone_h.language.status and obj.language.status == alone_o.language.status
    model.decoding = "eager"
    try:
        eager = model.predict_human_contact(_photo(7), "chair", max_new_tokens=2)
    finally:
        model.decoding = "static"
    assert not eager.found and eager.status == "truncated"


def test_cached_object_maps_equal_fresh(tiny_model_joint) -> None:
    from ivlm_core.geometry.lifting import lift_object_mesh

    model = tiny_model_joint
    vertices, faces = _object_mesh()
    cached = model._object_inputs(vertices, faces, 64, naive=False)
    again = model._object_inputs(vertices, faces, 64, naive=False)
    fresh = model._object_inputs(vertices, faces, 64, naive=True)
    maps, fresh_maps = cached[0].maps, fresh[0].maps
    assert again[0].maps is maps  # the same maps object, valid pixels already on the device
    assert str(model.device) in maps._cache
    np.testing.assert_array_equal(cached[0].renders, fresh[0].renders)
    torch.testing.assert_close(cached[1], fresh[1])
    logits = torch.randn(4, 64, 64, generator=torch.Generator().manual_seed(0)) * 3
    torch.testing.assert_close(lift_object_mesh(logits, maps), lift_object_mesh(logits, fresh_maps))
    for a, b in zip(
        (maps.valid_pixels().pixel, maps.valid_pixels().weights),
        (fresh_maps.valid_pixels().pixel, fresh_maps.valid_pixels().weights),
    ):
        torch.testing.assert_close(a, b)


def test_step_k_tokens_and_truncate_roll_back(tiny_model_gen) -> None:
    """The draft-verify primitives: K tokens in one forward == K single steps; truncate forgets columns."""
    model = tiny_model_gen
    ids, pixels = _ids_and_pixels(model, human_contact_question("cup"))
    llava = model.model.llava
    with torch.inference_mode():
        embeds = llava.embed(ids, llava.image_features(pixels))[0]
        dec = llava.ensure_decoder(model.config.seg_token_ids, model.token_ids.eos, embeds.shape[0], 16)
        draft = torch.tensor([[11, 12, 13, 14]])
        dec.prefill([embeds])
        start = dec.cache.length
        one_by_one = torch.cat([dec.step(draft[:, i : i + 1]) for i in range(4)], dim=1)
        dec.truncate(start)
        assert dec.cache.length == start and not dec.cache.valid[0, start:].any()
        together = dec.step(draft)
        torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=0)
        dec.truncate(start + 2)  # keep 2 accepted, re-feed a different third token
        third = dec.step(torch.tensor([[20]]))
        dec.truncate(start)
        ref = dec.step(torch.tensor([[11, 12, 20]]))
        torch.testing.assert_close(third[:, 0], ref[:, 2], atol=1e-5, rtol=0)
        full = llava.final_hidden(torch.cat([embeds, llava.llm.get_input_embeddings()(draft[0])])[None])
        torch.testing.assert_close(together[0], full[0, -4:], atol=1e-5, rtol=0)


def test_prompt_longer_than_the_cache_grows_it(tiny_model_gen) -> None:
    model = tiny_model_gen
    ids, pixels = _ids_and_pixels(model, human_contact_question("cup"))
    seg, eos = model.config.seg_token_ids, model.token_ids.eos
    before = model.model.llava.ensure_decoder(seg, eos, 1, 8)
    long_ids = ids[:-1] + ids[5:-1] * (before.max_prompt_len // max(len(ids) - 6, 1) + 1) + ids[-1:]
    out = model.model.llava.generate_static([long_ids], pixels, seg, eos, 4)[0]
    eager = model.model.llava.generate_cached(long_ids, pixels, seg, eos, 4)
    assert model.model.llava.decoder.max_prompt_len > before.max_prompt_len
    assert out.generated_ids == eager.generated_ids


def test_int8_weights_agree_with_fp32_on_the_tiny_model(tiny_checkpoints, tiny_body_assets) -> None:
    from ivlm_core.model.quantization import quantize_llm, torchao_available, weight_bytes

    if not torchao_available():
        pytest.skip(TORCHAO_SKIP)
    from ivlm_core.model.checkpoint import load_checkpoint

    assets, _, _ = tiny_body_assets
    model = load_checkpoint(tiny_checkpoints["Gen"], device="cpu", human_assets=assets)
    ids, pixels = _ids_and_pixels(model, human_contact_question("cup"))
    seg, eos = model.config.seg_token_ids, model.token_ids.eos
    ref = model.model.llava.generate_static([ids], pixels, seg, eos, 40)[0]
    before = weight_bytes(model.model.llava.llm.model.layers)
    assert quantize_llm(model.model.llava.llm, "int8") > 0
    assert weight_bytes(model.model.llava.llm.model.layers) < 0.5 * before
    model.model.llava.decoder = None
    out = model.model.llava.generate_static([ids], pixels, seg, eos, 40)[0]
    assert out.seg_hidden is not None
    cos = torch.nn.functional.cosine_similarity(out.seg_hidden, ref.seg_hidden).item()
    assert cos > 0.99, cos


def test_quantization_errors_say_what_to_do() -> None:
    from ivlm_core.errors import InvalidInputError
    from ivlm_core.model.quantization import check_quantization

    with pytest.raises(InvalidInputError, match="one of"):
        check_quantization("int3", "cpu")
    with pytest.raises(InvalidInputError, match=r"CUDA|torchao"):
        check_quantization("int4", "cpu")
    check_quantization("none", "cpu")


# ---------------------------------------------------------------------------------------------- CUDA only
@pytest.fixture(scope="module")
def cuda_models(tiny_checkpoints, tiny_body_assets):
    from ivlm_core.model.checkpoint import load_checkpoint

    assets, transfer, _ = tiny_body_assets
    return {
        dtype: load_checkpoint(tiny_checkpoints["Gen-Hu-Obj"], device="cuda", dtype=dtype, human_assets=assets,
                               contact_transfer=transfer, object_render_size=64)
        for dtype in (torch.float32, torch.bfloat16)
    }


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_graph_decoding_equals_eager(cuda_models, dtype) -> None:
    model = cuda_models[dtype]
    model.prepare()  # captures the graphs for 1 and 2 rows
    assert model.model.llava.decoder.captured_batches == (1, 2)
    ids_h, pixels = _ids_and_pixels(model, human_contact_question("chair"), 1)
    ids_o = model.processor.prompt_ids(object_contact_question("chair", "contact"))
    seg, eos = model.config.seg_token_ids, model.token_ids.eos
    for stop in (True, False):
        graph = model.model.llava.generate_static([ids_h, ids_o], pixels, seg, eos, 40, stop_at_mask=stop)
        eager = [model.model.llava.generate_cached(i, pixels, seg, eos, 40) for i in (ids_h, ids_o)]
        for g, e in zip(graph, eager):
            n = len(g.generated_ids)
            assert g.generated_ids == e.generated_ids[:n]
            if g.seg_hidden is not None:
                tol = 1e-4 if dtype == torch.float32 else 0.05
                torch.testing.assert_close(g.seg_hidden.float(), e.seg_hidden.float(), atol=tol, rtol=0.02)


@pytest.mark.cuda
def test_cuda_interaction_pass_runs_end_to_end(cuda_models) -> None:
    model = cuda_models[torch.bfloat16]
    model.prepare()
    vertices, faces = _object_mesh()
    human, obj = model.predict_interaction(_photo(3), "chair", vertices, faces, max_new_tokens=24, render_size=64)
    assert human.language.generated_ids and obj.language.generated_ids
    if isinstance(human, HumanContactResult):
        assert np.isfinite(human.contacts_smplh).all()
    if isinstance(obj, ObjectContactResult):
        assert np.isfinite(obj.contacts).all()


def test_the_host_stops_one_step_after_the_device_does() -> None:
    """The done flags are read one step behind: a stop at step n ends the loop after step n + 1, never later;
    the answer is cut at the stop whatever ran after it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ivlm_core.model.decoding import StaticDecoder

    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=4, num_key_value_heads=4)).eval()
    prompt = [torch.randn(9, 32)]
    with torch.inference_mode():
        free = StaticDecoder(llm, [63], 62, 64, 20, compile_mode="off").generate(prompt, 12, stop_at_mask=False)
    tokens = free.generated[0]
    assert free.forwards == 12 and free.stop_reason == ["length"]  # the limit: no step past it
    stop_at = 4  # make the 5th token the end of the answer
    with torch.inference_mode():
        decoder = StaticDecoder(llm, [63], tokens[stop_at], 64, 20, compile_mode="off")
        result = decoder.generate(prompt, 12, stop_at_mask=False)
    first = tokens.index(tokens[stop_at])
    assert result.generated == [tokens[: first + 1]] and result.stop_reason == ["eos"]
    assert result.forwards == first + 2  # the stopping step and the one queued behind it
