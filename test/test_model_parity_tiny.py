"""Whole-model parity with the reference on the tiny released-layout checkpoint (test/data/parity/tiny_model).

Loaded through ivlm's real loader; every stored reference output must be reproduced within the README's
tolerances (fp32, CPU).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from parity_data import parity_file


@pytest.fixture(scope="module")
def parity():
    from PIL import Image
    from safetensors.torch import load_file

    from ivlm_core.geometry.lifting import LiftingMaps
    from ivlm_core.model.checkpoint import load_checkpoint
    from ivlm_core.model.processing import HumanRenderAssets
    from ivlm_core.model.sam import SamSpec

    tiny = parity_file("tiny_model")
    meta = json.loads((tiny / "reference_meta.json").read_text())
    ref = load_file(str(tiny / "reference_outputs.safetensors"))
    renders = load_file(str(parity_file("sam_decoder", "vectors.safetensors")))["renders_uint8"].numpy()
    model = load_checkpoint(
        tiny, clip_dir=tiny / "clip_vision_tower", device="cpu", sam_spec=SamSpec.from_dict(meta["sam_cfg"])
    )
    maps = LiftingMaps(ref["lift_pixel_to_vertex"], ref["lift_bary"], int(meta["lift_num_vertices"]))
    model.set_human_assets(HumanRenderAssets(tuple(meta["views"]), renders, maps))
    image = np.asarray(Image.open(tiny / "inputs" / "tennis_racket__tiny.png").convert("RGB"))
    return model, meta, ref, image


def _maxdiff(a: torch.Tensor | np.ndarray, b: torch.Tensor) -> float:
    return float((torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a).float() - b).abs().max())


def test_prompt_ids_exact(parity) -> None:
    from ivlm_core.model.prompts import build_prompt, object_name_from_filename

    model, meta, ref, _ = parity
    assert object_name_from_filename("inputs/tennis_racket__tiny.png") == meta["object_name"]
    assert model.processor.build_prompt(meta["question"]) == meta["prompt"] == build_prompt(meta["question"])
    assert model.processor.prompt_ids(meta["question"]) == ref["input_ids"][0].tolist()


def test_clip_and_projector(parity) -> None:
    model, _, ref, image = parity
    pixels = model.processor.preprocess_image(image)
    assert _maxdiff(pixels, ref["image_clip"]) <= 1e-5
    assert _maxdiff(model.model.llava.clip_patch_features(pixels), ref["clip_patch_features"]) <= 1e-4
    assert _maxdiff(model.model.llava.image_features(pixels), ref["projected_image_features"]) <= 1e-4


@pytest.mark.parametrize("naive", [False, True], ids=["kv_cache", "naive"])
def test_natural_generation_exact_and_no_contact(parity, naive: bool) -> None:
    from ivlm_core.model.predictor import NoContactFound

    model, meta, ref, image = parity
    result = model.predict_human_contact(
        image, meta["object_name"], template="parts", max_new_tokens=meta["max_new_tokens"], naive=naive
    )
    assert isinstance(result, NoContactFound) and not result.found
    assert result.status == "truncated"  # the reference run hit max_new_tokens without EOS or [SEG]
    assert result.language.generated_ids == meta["natural_generated"]
    assert result.language.prompt_ids + result.language.generated_ids == ref["natural/output_ids"][0].tolist()
    assert result.language.seg_token is None


def test_natural_last_step_hidden_states(parity) -> None:
    model, _, ref, image = parity
    ids = ref["natural/output_ids"][0].tolist()[:-1]
    with torch.inference_mode():
        feats = model.model.llava.image_features(model.processor.preprocess_image(image))
        hidden = model.model.llava.final_hidden(model.model.llava.embed(ids, feats))
    assert _maxdiff(hidden, ref["natural/last_step_hidden_states"]) <= 1e-4


def test_forced_path_every_stage(parity) -> None:
    from ivlm_core.geometry.views import cam_params_tensor, get_view_set
    from ivlm_core.model.predictor import HumanContactResult

    model, meta, ref, image = parity
    forced = ref["forced/output_ids"][0].tolist()
    answer = forced[len(ref["input_ids"][0]) :]
    assert answer == meta["forced_generated"]
    with torch.inference_mode():
        feats = model.model.llava.image_features(model.processor.preprocess_image(image))
        hidden = model.model.llava.final_hidden(model.model.llava.embed(forced[:-1], feats))
        logits = model.model.llava.logits(hidden)
    assert _maxdiff(hidden, ref["forced/last_step_hidden_states"]) <= 1e-4
    assert _maxdiff(logits, ref["forced/full_forward_logits"]) <= 1e-4

    lang, out = model.run_language(image, meta["question"], answer_ids=answer)
    assert out.seg_index == answer.index(meta["seg_token_idx"]) and lang.seg_token == "[SEG]"
    assert torch.equal(out.seg_hidden, hidden[:, meta["forced_hidden_row"]])
    assert _maxdiff(out.seg_hidden, ref["forced/seg_hidden_state"]) <= 1e-4
    seg_embedding = model.model.llava.seg_embedding(out.seg_hidden)
    assert _maxdiff(seg_embedding, ref["forced/seg_embedding"]) <= 1e-5

    cams = cam_params_tensor(get_view_set(model.human_view_set))
    assert _maxdiff(cams, ref["cam_params"]) <= 1e-7
    tokens = model.model.view_tokens(out.seg_hidden, out.seg_token_id, model.camera_encodings(cams), num_tokens=4)
    assert _maxdiff(tokens, ref["forced/view_prompt_tokens"]) <= 1e-5
    pixels, _ = model.processor.sam_inputs(model.human_assets.renders)
    assert _maxdiff(pixels, ref["sam_pixel_values"]) <= 1e-5
    embeddings, _ = model.human_image_embeddings()
    with torch.inference_mode():
        low, iou = model.model.sam.decode(embeddings, tokens)
    assert _maxdiff(low, ref["forced/low_res_masks"]) <= 1e-5
    assert _maxdiff(iou, ref["forced/iou_predictions"]) <= 1e-5

    result = model.predict_human_contact(image, meta["object_name"], template="parts", answer_ids=answer)
    assert isinstance(result, HumanContactResult) and result.found
    assert result.view_logits.dtype == np.float32 and result.view_logits.shape == (4, 128, 128)
    assert _maxdiff(result.view_logits, ref["forced/pred_masks"]) <= 1e-5
    assert _maxdiff(result.contacts_smplh, ref["forced/pred_contact_3d"][0]) <= 1e-5
    assert np.all(result.contacts_smplh[45:] == 0.0)
    assert result.view_names == tuple(meta["views"])
