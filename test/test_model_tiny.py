"""End-to-end tests of the InteractVLM model on tiny random checkpoints saved in the released layout.

Everything goes through the real loader (sharded .bin + index, slow tokenizer, CLIP folder) and the public
inference API: every task, both token types, fast (KV cache) vs naive (reference) decoding, the [SEG]-state
selection, the shared-prompt decoder, the loader's strictness and the safetensors conversion.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ivlm_core.errors import CheckpointError, InvalidInputError, MissingAssetError
from ivlm_core.model.predictor import (
    Contact2DResult,
    HumanContactResult,
    NoContactFound,
    ObjectContactResult,
)
from ivlm_core.model.processing import HumanRenderAssets, object_encoder_cameras
from ivlm_core.model.prompts import IMAGE_TOKEN_INDEX, human_contact_question
from ivlm_core.testing.tiny_checkpoint import expected_answer_ids


def _photo(h: int = 48, w: int = 72, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _object_mesh() -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    mesh = trimesh.creation.box(extents=(0.4, 0.2, 0.1))
    mesh = mesh.subdivide().subdivide()
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


# ------------------------------------------------------------------------------------------ language side
def test_prompt_tokenisation(tiny_model_gen) -> None:
    model = tiny_model_gen
    ids = model.processor.prompt_ids(human_contact_question("cup"))
    assert ids[0] == model.token_ids.bos and ids.count(model.token_ids.bos) == 1
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    k = ids.index(IMAGE_TOKEN_INDEX)
    assert ids[k - 1] == model.token_ids.im_start and ids[k + 1] == model.token_ids.im_end
    # the 4.31 rule: the newline after <im_end> is stripped, the question starts with a dummy-prefix piece
    assert ids[k + 2 : k + 4] == model.processor.prompt_tokenizer.encode("Which body", add_bos=False)


def test_generation_answer_parsing_and_determinism(tiny_checkpoints, tiny_model_gen) -> None:
    result = tiny_model_gen.predict_human_contact(_photo(), "cup", template="parts")
    assert isinstance(result, HumanContactResult) and result.found
    lang = result.language
    expected = expected_answer_ids(tiny_checkpoints["Gen"], "Gen")
    seg = tiny_model_gen.token_ids.seg
    # decoding stops at the mask token: nothing after it changes the mask
    assert lang.generated_ids == expected[: expected.index(seg) + 1] and lang.status == "contact"
    assert lang.seg_token == "[SEG]" and lang.body_parts == ("hands",)
    assert "[SEG]" in lang.text
    again = tiny_model_gen.predict_human_contact(_photo(), "cup", template="parts")
    assert again.language.generated_ids == lang.generated_ids
    np.testing.assert_array_equal(again.view_logits, result.view_logits)
    # the whole answer, as the reference generates it (to EOS), gives the same mask
    full = tiny_model_gen.predict_human_contact(_photo(), "cup", template="parts", stop_at_mask=False)
    assert full.language.generated_ids == [*expected, tiny_model_gen.token_ids.eos]
    np.testing.assert_array_equal(full.view_logits, result.view_logits)
    np.testing.assert_array_equal(again.contacts_smplh, result.contacts_smplh)


def test_human_contact_shapes(tiny_model_gen, tiny_body_assets) -> None:
    assets, transfer, _ = tiny_body_assets
    result = tiny_model_gen.predict_human_contact(_photo(), "scene", template="parts")
    assert result.view_names == ("topfront", "bottomfront", "topback", "bottomback")
    assert result.view_logits.shape == (4, 64, 64) and result.view_logits.dtype == np.float32
    assert result.iou.shape == (4,)
    assert result.contacts_smplh.shape == (assets.maps.num_vertices,)
    assert np.all((result.contacts_smplh >= 0) & (result.contacts_smplh <= 1))
    assert result.contacts_smplh.max() > 0  # visible vertices get a probability
    assert result.contacts_smplx is not None and result.contacts_smplx.shape == (transfer.num_target,)
    np.testing.assert_allclose(result.contacts_smplx, transfer.apply(result.contacts_smplh), atol=1e-6)
    assert {"prefill_s", "decode_s", "sam_s", "lift_s", "total_s"} <= set(result.timings)


def test_fast_path_equals_naive_path(tiny_model_gen) -> None:
    tiny_model_gen.prepare()
    assert tiny_model_gen._human_embeddings is not None and len(tiny_model_gen._cam_cache) >= 2
    fast = tiny_model_gen.predict_human_contact(_photo(seed=3), "bottle", template="parts")
    naive = tiny_model_gen.predict_human_contact(_photo(seed=3), "bottle", template="parts", naive=True)
    seg_index = fast.language.seg_index
    assert fast.language.generated_ids == naive.language.generated_ids[: seg_index + 1]  # stopped at [SEG]
    assert seg_index == naive.language.seg_index
    np.testing.assert_allclose(fast.view_logits, naive.view_logits, atol=1e-5)
    np.testing.assert_allclose(fast.contacts_smplh, naive.contacts_smplh, atol=1e-6)


def test_seg_state_is_the_state_before_seg(tiny_model_gen) -> None:
    model = tiny_model_gen
    image = _photo(seed=4)
    lang, out = model.run_language(image, human_contact_question("cup"), stop_at_mask=False)
    seq = lang.prompt_ids + lang.generated_ids
    with torch.inference_mode():
        feats = model.model.llava.image_features(model.processor.preprocess_image(image))
        hidden = model.model.llava.final_hidden(model.model.llava.embed(seq, feats))
    img_extra = feats.shape[1] - 1
    seg_pos = len(lang.prompt_ids) + out.seg_index  # in token coordinates
    expected = hidden[:, seg_pos + img_extra - 1]
    torch.testing.assert_close(out.seg_hidden, expected, atol=1e-5, rtol=0)
    # and not the [SEG] token's own state
    assert not torch.allclose(out.seg_hidden, hidden[:, seg_pos + img_extra], atol=1e-3)
    # the LM head applied to that state is what emitted [SEG]
    assert int(model.model.llava.logits(out.seg_hidden).argmax()) == model.token_ids.seg


def test_shared_prompt_decoder_equivalence(tiny_model_gen) -> None:
    model = tiny_model_gen
    embeddings, _ = model.human_image_embeddings()
    tokens = torch.randn(1, 4, model.model.sam.spec.prompt_embed_dim, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        low, iou = model.model.sam.decode(embeddings, tokens)
        per_view = [model.model.sam.decode(embeddings[v : v + 1], tokens) for v in range(4)]
        own_token = [model.model.sam.decode(embeddings[v : v + 1], tokens[:, v : v + 1]) for v in range(4)]
    torch.testing.assert_close(low, torch.cat([p[0] for p in per_view]), atol=1e-5, rtol=0)
    torch.testing.assert_close(iou, torch.cat([p[1] for p in per_view]), atol=1e-5, rtol=0)
    assert not torch.allclose(low, torch.cat([p[0] for p in own_token]), atol=1e-4)


def test_no_generate_mode_simple_template(tiny_model_gen) -> None:
    model = tiny_model_gen
    image = _photo(seed=5)
    result = model.predict_human_contact(image, "cup", template="simple", generate=False)
    assert isinstance(result, HumanContactResult)
    assert result.language.generated_ids == [model.token_ids.seg]
    ids = model.processor.prompt_ids(human_contact_question("cup", "simple"))
    with torch.inference_mode():
        feats = model.model.llava.image_features(model.processor.preprocess_image(image))
        last = model.model.llava.final_hidden(model.model.llava.embed(ids, feats))[:, -1]
    _, out = model.run_language(image, human_contact_question("cup", "simple"), generate=False)
    torch.testing.assert_close(out.seg_hidden, last, atol=1e-5, rtol=0)
    with pytest.raises(InvalidInputError):
        model.predict_human_contact(image, "cup", template="parts", generate=False)


def test_no_seg_token_is_a_typed_result(tiny_model_gen) -> None:
    result = tiny_model_gen.predict_human_contact(_photo(), "cup", template="parts", max_new_tokens=3)
    assert isinstance(result, NoContactFound) and not result.found
    assert len(result.language.generated_ids) == 3 and result.language.seg_token is None
    assert result.task == "human_contact"


def test_missing_human_assets_is_actionable(tiny_checkpoints) -> None:
    from ivlm_core.model.checkpoint import load_checkpoint

    model = load_checkpoint(tiny_checkpoints["Gen"], device="cpu")
    with pytest.raises(MissingAssetError, match="hcontact_vitruvian"):
        model.predict_human_contact(_photo(), "cup")


def test_reference_data_folder_assets(tmp_path: Path, tiny_body_assets) -> None:
    from PIL import Image

    assets, _, _ = tiny_body_assets
    folder = tmp_path / "data" / "hcontact_vitruvian"
    folder.mkdir(parents=True)
    for v, name in enumerate(assets.view_names):
        Image.fromarray(assets.renders[v]).save(folder / f"body_render_norm_{name}.png")
    p2v = {n: assets.maps.pixel_to_vertex[v].numpy() for v, n in enumerate(assets.view_names)}
    bary = {n: assets.maps.bary[v].numpy() for v, n in enumerate(assets.view_names)}
    np.savez(folder / "pixel_to_vertex_map_64.npz", **p2v)
    np.savez(folder / "bary_coords_map_64.npz", **bary)
    # the -fix model's mv2 folder falls back to hcontact_vitruvian (same geometry)
    loaded = HumanRenderAssets.from_reference_folder(tmp_path / "data", "4MV-Z_Vitru_mv2")
    np.testing.assert_array_equal(loaded.renders, assets.renders)
    assert torch.equal(loaded.maps.pixel_to_vertex, assets.maps.pixel_to_vertex)
    with pytest.raises(MissingAssetError):
        HumanRenderAssets.from_reference_folder(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------ other tasks
def test_object_contact(tiny_model_gen) -> None:
    vertices, faces = _object_mesh()
    result = tiny_model_gen.predict_object_contact(_photo(), "chair", vertices, faces, template="afford")
    assert isinstance(result, ObjectContactResult)
    assert result.view_names == ("frontleft", "frontright", "backleft", "backright")
    assert result.renders.shape == (4, 64, 64, 3) and result.renders.dtype == np.uint8
    assert result.view_logits.shape == (4, 64, 64)
    assert result.contacts.shape == (len(vertices),)
    nonzero = result.contacts[result.contacts > 0]
    assert np.all(nonzero >= 0.3 - 1e-6)  # the reference object lifter only lets p > 0.3 vote
    # the encoder cameras matter: the Gen tiny model is an affordance model (cam_params at 2.0); 1.5 differs
    model = tiny_model_gen
    assert model.encoder_cameras.name == "cam_params" and model.encoder_cameras.distance == 2.0
    saved = model.encoder_cameras
    try:
        model.encoder_cameras = object_encoder_cameras(model.config, 1.5)
        other = model.predict_object_contact(_photo(), "chair", vertices, faces, template="afford")
    finally:
        model.encoder_cameras = saved
    assert not np.allclose(other.view_logits, result.view_logits)
    # renders + SAM embeddings of a mesh are reused by the fast path and equal a fresh (naive) computation
    cached = model.predict_object_contact(_photo(), "chair", vertices, faces, template="afford")
    fresh = model.predict_object_contact(_photo(), "chair", vertices, faces, template="afford", naive=True)
    np.testing.assert_array_equal(cached.view_logits, result.view_logits)
    np.testing.assert_allclose(fresh.view_logits, result.view_logits, atol=1e-5)
    np.testing.assert_allclose(fresh.contacts, result.contacts, atol=1e-6)


def test_human_contact_2d(tiny_model_gen) -> None:
    photo = _photo(50, 90)
    result = tiny_model_gen.predict_human_contact_2d(photo, "cup")
    assert isinstance(result, Contact2DResult)
    assert result.logits.shape == (50, 90) and result.logits.dtype == np.float32
    assert np.isfinite(result.logits).all()


# ------------------------------------------------------------------------------------------ joint model
def test_joint_model_routes_hseg_and_oseg(tiny_checkpoints, tiny_model_joint) -> None:
    model = tiny_model_joint
    assert model.model.splitter is not None
    result = model.predict_human_contact(_photo(), "cup", template="parts")
    assert isinstance(result, HumanContactResult) and result.language.seg_token == "[HSEG]"
    expected = expected_answer_ids(tiny_checkpoints["Gen-Hu-Obj"], "Gen-Hu-Obj")
    assert result.language.generated_ids == expected[: expected.index(model.token_ids.hseg) + 1]

    image = _photo()
    hidden = torch.randn(1, model.model.llava.hidden_size, generator=torch.Generator().manual_seed(1))
    enc = model.camera_encodings(np.full((4, 5), 0.5, np.float32))
    with torch.inference_mode():
        plain = model.model.llava.seg_embedding(hidden)[:, None].expand(1, 4, -1) * enc[None]
        human, obj = model.model.splitter(plain)
    torch.testing.assert_close(model.model.view_tokens(hidden, model.token_ids.hseg, enc, 4), human)
    torch.testing.assert_close(model.model.view_tokens(hidden, model.token_ids.oseg, enc, 4), obj)
    torch.testing.assert_close(model.model.view_tokens(hidden, model.token_ids.seg, enc, 4), plain)

    # an answer with [OSEG] on the object task goes through the object branch
    tok = model.processor.prompt_tokenizer
    answer = [*tok.encode("It is [OSEG].", add_bos=False)[1:], model.token_ids.eos]
    vertices, faces = _object_mesh()
    obj_result = model.predict_object_contact(image, "chair", vertices, faces, answer_ids=answer)
    assert obj_result.language.seg_token == "[OSEG]"
    hseg_answer = [model.token_ids.hseg if t == model.token_ids.oseg else t for t in answer]
    hum_routed = model.predict_object_contact(image, "chair", vertices, faces, answer_ids=hseg_answer)
    assert not np.allclose(obj_result.view_logits, hum_routed.view_logits)


# ------------------------------------------------------------------------------------------ loader
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_shard(folder: Path, edit) -> None:
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    shard = folder / sorted(set(index["weight_map"].values()))[0]
    state = torch.load(shard, weights_only=True)
    edit(state, index)
    torch.save(state, shard)
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))


def test_loader_rejects_unknown_missing_and_misshaped_keys(tmp_path: Path, tiny_checkpoints) -> None:
    from ivlm_core.model.checkpoint import load_checkpoint

    src = tiny_checkpoints["Gen"]

    def add_unknown(state, index):
        state["model.visual_model.human_mask_decoder.iou_token.weight"] = torch.zeros(1, 32)

    def drop_one(state, index):
        state.pop(sorted(state)[0])

    def reshape_one(state, index):
        key = next(k for k in sorted(state) if k.endswith("mm_projector.weight") or k.endswith("norm.weight"))
        state[key] = torch.zeros(3)

    for name, edit, pattern in (
        ("unknown", add_unknown, "Unknown keys"),
        ("missing", drop_one, "Missing keys"),
        ("shape", reshape_one, "Shape mismatches"),
    ):
        folder = _copy(src, tmp_path / name)
        _edit_shard(folder, edit)
        with pytest.raises(CheckpointError, match=pattern):
            load_checkpoint(folder, device="cpu")


def test_loader_needs_clip_and_a_matching_sam(tmp_path: Path, tiny_checkpoints) -> None:
    from ivlm_core.model.checkpoint import load_checkpoint

    folder = _copy(tiny_checkpoints["Gen"], tmp_path / "noclip")
    shutil.rmtree(folder / "clip_vision_tower")
    with pytest.raises(MissingAssetError, match="clip"):
        load_checkpoint(folder, device="cpu")
    model = load_checkpoint(folder, clip_dir=tiny_checkpoints["Gen"] / "clip_vision_tower", device="cpu")
    assert model.clip_dir == tiny_checkpoints["Gen"] / "clip_vision_tower"

    cfg = json.loads((folder / "config.json").read_text())
    del cfg["sam_config"]  # -> SAM ViT-H, which the tiny weights do not fit
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="ViT-H"):
        load_checkpoint(folder, clip_dir=tiny_checkpoints["Gen"] / "clip_vision_tower", device="cpu")

    cfg["sam_config"] = json.loads((tiny_checkpoints["Gen"] / "config.json").read_text())["sam_config"]
    cfg["seg_token_idx"] = cfg["seg_token_idx"] + 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="Tokenizer"):
        load_checkpoint(folder, clip_dir=tiny_checkpoints["Gen"] / "clip_vision_tower", device="cpu")


def test_convert_to_safetensors_round_trip(tmp_path: Path, tiny_checkpoints, tiny_model_gen, tiny_body_assets) -> None:
    from ivlm_core.model.checkpoint import convert_to_safetensors, find_weight_files, load_checkpoint

    out = convert_to_safetensors(tiny_checkpoints["Gen"], tmp_path / "safe")
    files = find_weight_files(out)
    assert files.fmt == "safetensors" and all(p.suffix == ".safetensors" for p in files.shards)
    assets, transfer, _ = tiny_body_assets
    model = load_checkpoint(out, device="cpu", human_assets=assets, contact_transfer=transfer)
    a = model.predict_human_contact(_photo(), "cup", template="parts")
    b = tiny_model_gen.predict_human_contact(_photo(), "cup", template="parts")
    assert a.language.generated_ids == b.language.generated_ids
    np.testing.assert_array_equal(a.view_logits, b.view_logits)
