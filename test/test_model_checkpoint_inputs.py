"""The real checkpoints see what they were trained on (issue: inputs the real checkpoints expect).

One test per input: encoder cameras per checkpoint, human renders (shipped first, own HardPhong render as the
fallback, and `info` comparing them), question type from the checkpoint, answers cut by max_new_tokens reported
as truncated (result, pipeline, message, diagnostics), literal special tokens in object names, and
reproduction inputs (ready-made renders + a reference lift2d_dict.pkl, mask-token internals).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from parity_data import parity_file

from ivlm_core.errors import InvalidInputError
from ivlm_core.model.checkpoint import read_config
from ivlm_core.model.predictor import NoContactFound, ObjectContactResult
from ivlm_core.model.processing import (
    HumanRenderAssets,
    ObjectRenderAssets,
    describe_inputs,
    object_encoder_cameras,
    resolve_human_assets,
)
from ivlm_core.model.prompts import HCONTACT_PARTS_QUESTIONS, HCONTACT_SIMPLE_QUESTIONS, PromptTokenizer
from ivlm_core.pipeline import InteractionPipeline
from ivlm_core.pipeline_config import PipelineConfig

# spec 2.6: normalize_cam_params of the object views frontleft, frontright, backleft, backright
OBJECT_CAMS_AT_2 = [
    [0.2, 0.125, 0.875, 0.5, 0.5],
    [0.2, 0.125, 0.125, 0.5, 0.5],
    [0.2, 330 / 360, 0.375, 0.5, 0.5],
    [0.2, 330 / 360, 0.625, 0.5, 0.5],
]
OBJECT_MESH_CAMS_AT_1_5 = [[0.15, *row[1:]] for row in OBJECT_CAMS_AT_2]


def _photo(h: int = 48, w: int = 72, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _box_mesh() -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    mesh = trimesh.creation.box(extents=(0.4, 0.2, 0.1)).subdivide()
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def _with_config(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _write_shipped_renders(assets: HumanRenderAssets, data_dir: Path) -> Path:
    """A reference-layout data/hcontact_vitruvian folder holding these renders and maps."""
    from PIL import Image

    folder = data_dir / "hcontact_vitruvian"
    folder.mkdir(parents=True)
    size = assets.renders.shape[1]
    for v, name in enumerate(assets.view_names):
        Image.fromarray(assets.renders[v]).save(folder / f"body_render_norm_{name}.png")
    np.savez(folder / f"pixel_to_vertex_map_{size}.npz",
             **{n: assets.maps.pixel_to_vertex[v].numpy() for v, n in enumerate(assets.view_names)})
    np.savez(folder / f"bary_coords_map_{size}.npz",
             **{n: assets.maps.bary[v].numpy() for v, n in enumerate(assets.view_names)})
    return data_dir


# ---------------------------------------------------------------------------------------------- 1. cameras
def test_encoder_cameras_follow_each_checkpoint(tiny_checkpoints, tmp_path) -> None:
    afford = object_encoder_cameras(read_config(tiny_checkpoints["Gen"]))  # oC 4MV-Z_HM, afford questions
    assert (afford.name, afford.distance) == ("cam_params", 2.0)
    np.testing.assert_allclose(afford.params("4MV-Z_HM"), OBJECT_CAMS_AT_2, atol=1e-6)
    joint = object_encoder_cameras(read_config(tiny_checkpoints["Gen-Hu-Obj"]))
    assert (joint.name, joint.distance) == ("mesh_cam_params", 1.5)
    np.testing.assert_allclose(joint.params("4MV-Z_HM_BM"), OBJECT_MESH_CAMS_AT_1_5, atol=1e-6)
    pico = _with_config(tiny_checkpoints["Gen"], tmp_path / "pico", oC_sam_view_type="4MV-Z_HM_BM",
                        oC_question_type="contact")
    assert object_encoder_cameras(read_config(pico)).name == "mesh_cam_params"
    override = object_encoder_cameras(read_config(tiny_checkpoints["Gen"]), 1.5)
    assert override.name == "override" and override.params("4MV-Z_HM")[0, 0] == pytest.approx(0.15)
    with pytest.raises(InvalidInputError):
        object_encoder_cameras(read_config(tiny_checkpoints["Gen"]), -1.0)


def test_one_camera_override_for_pipeline_node_and_clis(tiny_checkpoints, tiny_body_assets) -> None:
    from ivlm_core import cli
    from ivlm_ros.parameters import settings_from_dict

    _, _, body_dir = tiny_body_assets
    pipe = InteractionPipeline.load(PipelineConfig(
        checkpoint_dir=str(tiny_checkpoints["Gen"]), body_model_dir=str(body_dir), device="cpu",
        object_cam_distance=1.5))
    assert pipe.model.encoder_cameras.name == "override" and pipe.model.encoder_cameras.distance == 1.5
    with pytest.raises(InvalidInputError, match="object_cam_distance"):
        PipelineConfig(checkpoint_dir="x", object_cam_distance=0.0)
    assert settings_from_dict({"object_cam_distance": 1.5}).pipeline_config_dict()["object_cam_distance"] == 1.5
    assert settings_from_dict({}).pipeline_config_dict()["object_cam_distance"] is None  # 0 = per checkpoint
    for command in ("predict", "reconstruct", "batch", "info"):
        args = ["--checkpoint", "c", "--object-cam-distance", "1.5"]
        args += {"predict": ["--image", "a.png"], "reconstruct": ["--image", "a.png"], "batch": ["--input", "d"]}.get(
            command, [])
        assert cli.build_parser().parse_args([command, *args]).object_cam_distance == 1.5


# ---------------------------------------------------------------------------------------------- 2. renders
def test_shipped_renders_are_the_default_and_info_compares_them(tiny_checkpoints, tiny_body_assets,
                                                                tmp_path, capsys) -> None:
    from ivlm_core import cli

    own, _, body_dir = tiny_body_assets
    # no reference data: ivlm's HardPhong render of the body
    fallback = resolve_human_assets("4MV-Z_Vitru", body_model_dir=body_dir, image_size=64)
    assert fallback.source.startswith("ivlm HardPhong render")
    # same renders up to a rare 1-level step where a float sum lands on an integer (truncation)
    assert np.abs(fallback.renders.astype(int) - own.renders.astype(int)).max() <= 1
    # the shipped renders next to smpl_to_smplx.pkl (users unzip data.zip for it) win, without being named
    data_dir = _write_shipped_renders(own, tmp_path / "data")
    shipped = resolve_human_assets("4MV-Z_Vitru", smpl_to_smplx=data_dir / "smpl_to_smplx.pkl",
                                   body_model_dir=body_dir)
    assert shipped.source.startswith("reference renders")
    # info names the renders in use and how far ivlm's own render is from the shipped one, per view
    config = read_config(tiny_checkpoints["Gen"])
    described = describe_inputs(config, reference_data_dir=data_dir, body_model_dir=body_dir)
    renders = described["human_renders"]
    assert renders["in_use"] == "reference"
    diffs = renders["ivlm_render_mean_abs_diff"]
    assert set(diffs) == set(own.view_names) and max(diffs.values()) < 0.01  # shipped == own render here
    bright = HumanRenderAssets(own.view_names, np.minimum(own.renders.astype(int) + 10, 255).astype(np.uint8),
                               own.maps)
    shutil.rmtree(data_dir)
    _write_shipped_renders(bright, data_dir)
    diff = describe_inputs(config, reference_data_dir=data_dir, body_model_dir=body_dir)["human_renders"]
    assert all(0 < d <= 10 for d in diff["ivlm_render_mean_abs_diff"].values())
    assert cli.main(["info", "--checkpoint", str(tiny_checkpoints["Gen"]), "--reference-data-dir", str(data_dir),
                     "--body-model-dir", str(body_dir)]) == 0
    text = capsys.readouterr().out
    assert "human renders  reference renders in" in text and "mean |diff|" in text
    assert "questions      human=parts object=afford (from checkpoint config)" in text
    assert "object cams    cam_params at distance 2.0" in text


# ---------------------------------------------------------------------------------------------- 4. questions
def test_question_type_comes_from_the_checkpoint_with_one_override(tiny_checkpoints, tiny_body_assets,
                                                                   tmp_path) -> None:
    from ivlm_ros.parameters import settings_from_dict

    _, _, body_dir = tiny_body_assets
    simple = _with_config(tiny_checkpoints["Gen"], tmp_path / "simple", hC_question_type="simple")
    pipe = InteractionPipeline.load(PipelineConfig(checkpoint_dir=str(simple), body_model_dir=str(body_dir),
                                                   device="cpu", max_new_tokens=16))
    assert pipe.cfg.question_template == "auto" and pipe.model.question_type == "simple"
    result = pipe.model.predict_human_contact(_photo(), "cup")
    assert HCONTACT_SIMPLE_QUESTIONS[0].format(class_name="cup") in result.language.prompt
    parts = InteractionPipeline.load(PipelineConfig(checkpoint_dir=str(simple), body_model_dir=str(body_dir),
                                                    device="cpu", question_template="parts"))
    assert parts.model.question_type == "parts"
    assert HCONTACT_PARTS_QUESTIONS[0].format(class_name="cup") in (
        parts.model.predict_human_contact(_photo(), "cup", max_new_tokens=4).language.prompt)
    assert settings_from_dict({}).pipeline_config_dict()["question_template"] == "auto"
    with pytest.raises(InvalidInputError, match="simple"):
        InteractionPipeline.load(PipelineConfig(checkpoint_dir=str(tiny_checkpoints["Gen"]),
                                                body_model_dir=str(body_dir), device="cpu", generate=False))


# ---------------------------------------------------------------------------------------------- 5. truncation
def test_an_answer_cut_before_its_mask_token_is_truncated_not_no_contact(tiny_model_gen) -> None:
    cut = tiny_model_gen.predict_human_contact(_photo(), "cup", max_new_tokens=3)
    assert isinstance(cut, NoContactFound) and cut.status == "truncated"
    assert cut.message == "answer truncated at 3 tokens (max_new_tokens)"
    # an answer that ends (EOS) without a mask token is "no contact"
    tok = tiny_model_gen.processor.prompt_tokenizer
    answer = [*tok.encode("No contact here.", add_bos=False), tiny_model_gen.token_ids.eos]
    none = tiny_model_gen.predict_human_contact(_photo(), "cup", answer_ids=answer)
    assert isinstance(none, NoContactFound) and none.status == "no_contact"
    found = tiny_model_gen.predict_human_contact(_photo(), "cup")
    assert found.found and found.language.status == "contact"
    assert PipelineConfig().max_new_tokens >= 512 and PipelineConfig(max_new_tokens=1024).max_new_tokens == 1024


def test_truncation_reaches_the_pipeline_messages_and_diagnostics(tiny_checkpoints, tiny_body_assets) -> None:
    from ivlm_msgs.msg import HumanContact
    from std_msgs.msg import Header

    from ivlm_ros.messages import human_contact_msg
    from ivlm_ros.node import Stats

    _, _, body_dir = tiny_body_assets
    pipe = InteractionPipeline.load(PipelineConfig(checkpoint_dir=str(tiny_checkpoints["Gen"]),
                                                   body_model_dir=str(body_dir), device="cpu", max_new_tokens=3))
    result = pipe.estimate(_photo(), "cup")
    assert not result.human.contact_found and result.human.answer_status == "truncated"
    msg = human_contact_msg(Header(), "cup", "tiny", result.human, 0.5)
    assert msg.answer_status == HumanContact.ANSWER_TRUNCATED and "truncated at 3 tokens" in msg.answer_message
    stats = Stats()
    stats.record_answers(result)
    assert stats.answers_truncated == 1 and stats.last_answer_status.startswith("truncated: answer truncated")


# ---------------------------------------------------------------------------------------------- 6. tokenizer
def test_literal_special_tokens_in_object_names_tokenize_like_the_slow_llama_tokenizer() -> None:
    from ivlm_core.model.checkpoint import load_tokenizer

    tiny = parity_file("tiny_model")
    hf, tok, _ = load_tokenizer(tiny, read_config(tiny))
    sp = tok.sp_model
    # the 4.31 rule: <s> </s> <unk> are never split and keep the whitespace around them (AddedToken lstrip/
    # rstrip False), the text between them is encoded chunk by chunk with the dummy prefix
    name = "a <s>b</s> c<unk>"
    expected = [*sp.encode("a "), 1, *sp.encode("b"), 2, *sp.encode(" c"), 0]
    assert tok.encode(name, add_bos=False) == expected
    for text in (f"Which body parts are in contact with the {name}?", "x</s> <s> y", "<unk>"):
        assert tok.encode(text) == hf.encode(text)  # the slow tokenizer of transformers, legacy mode
    plain = PromptTokenizer(sp, {})
    assert plain.encode("<s>", add_bos=False) == [1]


# ---------------------------------------------------------------------------------------------- 7. reproduction
def test_ready_made_renders_and_lift2d_pkl_reproduce_the_mesh_path(tiny_model_gen, tmp_path) -> None:
    from PIL import Image

    vertices, faces = _box_mesh()
    from_mesh = tiny_model_gen.predict_object_contact(_photo(), "chair", vertices, faces)
    assert isinstance(from_mesh, ObjectContactResult)
    # the reference demo's sam_inp_objs/: obj_render_color_{view}.png + joblib lift2d_dict.pkl
    rendered = tiny_model_gen.render_object(vertices, faces)
    folder = tmp_path / "sam_inp_objs"
    folder.mkdir()
    for v, view in enumerate(rendered.view_names):
        Image.fromarray(rendered.renders[v]).save(folder / f"obj_render_color_{view}.png")
    joblib.dump(rendered.maps.to_lift2d_dict(), folder / "lift2d_dict.pkl")
    assets = ObjectRenderAssets.from_reference_folder(folder)
    assert assets.source.startswith("reference renders")
    ready = tiny_model_gen.predict_object_contact(_photo(), "chair", object_assets=assets, return_internals=True)
    np.testing.assert_allclose(ready.view_logits, from_mesh.view_logits, atol=1e-5)
    np.testing.assert_allclose(ready.contacts, from_mesh.contacts, atol=1e-6)
    # internals: the mask-token state, its text_hidden_fcs embedding, the SAM prompt, the low-res masks
    internals = ready.internals
    assert from_mesh.internals is None and internals is not None
    llava = tiny_model_gen.model.llava
    with torch.inference_mode():
        embedding = llava.seg_embedding(torch.from_numpy(internals.seg_hidden))
        logits = tiny_model_gen.model.sam.postprocess(torch.from_numpy(internals.low_res_masks[:1]), (64, 64),
                                                      (64, 64))
    np.testing.assert_allclose(internals.seg_embedding, embedding.numpy(), atol=1e-6)
    assert internals.view_tokens.shape == (1, 4, embedding.shape[-1])
    np.testing.assert_allclose(logits[0].numpy(), ready.view_logits[0], atol=1e-5)
    with pytest.raises(InvalidInputError, match="either the mesh"):
        tiny_model_gen.predict_object_contact(_photo(), "chair")
    with pytest.raises(InvalidInputError, match="either the mesh"):
        tiny_model_gen.predict_object_contact(_photo(), "chair", vertices, faces, object_assets=assets)
