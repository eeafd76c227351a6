"""The whole pipeline on a tiny released-layout checkpoint and synthetic body models, end to end.

Covers what the node relies on: SMPL-X contacts on the display body, object contact on a library mesh,
the body placed in the camera frame from a real photo (or supplied from outside: OSX npz, SMPL-X parameters),
the object fitted to it, and stated reasons when something cannot be placed.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.pipeline import InteractionPipeline, PipelineConfig

SAMPLES = Path(__file__).parent / "data" / "samples"


@pytest.fixture(scope="module")
def object_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline_objects")
    racket = trimesh.creation.capsule(height=0.5, radius=0.03, count=[8, 8])
    racket.export(root / "racket.obj")
    (root / "objects.yaml").write_text("objects:\n  tennis_racket: {mesh: racket.obj, scale: 1.0}\n")
    return root / "objects.yaml"


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(Image.open(SAMPLES / "tennis_racket__serve.png").convert("RGB"))


def _k(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    f = 0.5 * w / np.tan(np.deg2rad(55.0) / 2)
    return np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])


def test_human_contact_lands_on_the_smplx_display_body(tiny_checkpoints, tiny_body_assets, photo) -> None:
    _, transfer, body_dir = tiny_body_assets
    cfg = PipelineConfig(checkpoint_dir=str(tiny_checkpoints["Gen"]), body_model_dir=str(body_dir),
                         max_new_tokens=16)
    pipe = InteractionPipeline.load(cfg)
    result = pipe.estimate(photo, "tennis_racket")
    human = result.human
    assert human is not None and human.contact_found and human.body_model == "smplx"
    vertices, faces = result.body_mesh
    assert human.vertex_contact.shape == (transfer.num_target,) == (len(vertices),)
    assert np.isfinite(human.vertex_contact).all() and (human.vertex_contact >= 0).all()
    assert human.vertex_contact.max() <= 1.0 and faces.max() < len(vertices)
    assert human.view_logits.shape[0] == human.view_images.shape[0] == 4
    assert result.object is None and result.body_placement is None and "total" in result.timings_ms
    again = pipe.estimate(photo, "tennis_racket")
    np.testing.assert_array_equal(again.human.vertex_contact, human.vertex_contact)
    with pytest.raises(InvalidInputError, match="object query must be a non-empty"):
        pipe.estimate(photo, "  ")
    for bad, reason in (("<image>", "special tokens"), ("mug\x1b[31m", "control"), ("x" * 101, "at most 100")):
        with pytest.raises(InvalidInputError, match=reason):  # the shared validator guards the CLI path too
            pipe.estimate(photo, bad)
    with pytest.raises(InvalidInputError, match="RGB uint8"):
        pipe.estimate(photo.astype(np.float32), "tennis_racket")


def test_interaction_places_body_and_object(tiny_checkpoints, tiny_body_assets, object_library, photo,
                                            tmp_path, monkeypatch) -> None:
    pytest.importorskip("mediapipe")
    _, _, body_dir = tiny_body_assets
    fit_yaml = tmp_path / "fit.yaml"
    fit_yaml.write_text("iterations: 80\n")
    cfg = PipelineConfig(checkpoint_dir=str(tiny_checkpoints["Gen-Hu-Obj"]), body_model_dir=str(body_dir),
                         task="interaction", object_library=str(object_library), fit_human=True,
                         fit_object=True, fit_config=str(fit_yaml), max_new_tokens=16)
    warmed = []
    monkeypatch.setattr("ivlm_core.fitting.object_fit.warm_up", lambda: warmed.append(True))
    pipe = InteractionPipeline.load(cfg)
    assert pipe.fit_config.iterations == 80 and warmed  # the fit's one-time start-up cost is paid at load
    k = _k(photo)
    no_box = pipe.estimate(photo, "tennis_racket", camera_k=k)
    assert no_box.body_placement.placed, no_box.body_placement.status
    assert not no_box.object_placement.placed and "no object mask or box" in no_box.object_placement.status

    result = pipe.estimate(photo, "tennis_racket", camera_k=k, object_box=(230, 30, 390, 170))
    obj = result.object
    assert obj is not None and obj.vertex_contact.shape == (len(obj.vertices),)
    body = result.body_placement
    assert body.placed and body.vertices.shape[1] == 3 and 0.5 < np.median(body.vertices[:, 2]) < 20
    placement = result.object_placement
    assert placement.placed, placement.status
    assert np.allclose(placement.rotation @ placement.rotation.T, np.eye(3), atol=1e-4)
    assert placement.vertices.shape == obj.vertices.shape and np.isfinite(placement.vertices).all()
    assert {"loss_mask", "contact_distance_m", "penetration_depth_m", "iterations"} <= set(placement.report)
    # the hypotheses' short fit, then the finalists' steps, as configured
    fit = pipe.fit_config
    assert placement.report["iterations"] == min(fit.warmup_iterations, fit.iterations) + fit.iterations
    no_k = pipe.estimate(photo, "tennis_racket")
    assert not no_k.body_placement.placed and "intrinsics" in no_k.body_placement.status

    # The same steps apart, as the node's loops call them: the VLM alone, the object fit alone, a tracker.
    contacts = pipe.estimate_contacts(photo, "tennis_racket")
    np.testing.assert_allclose(contacts.human.vertex_contact, result.human.vertex_contact, atol=1e-6)
    np.testing.assert_allclose(contacts.object.vertex_contact, obj.vertex_contact, atol=1e-6)
    assert "contacts" in contacts.timings_ms and contacts.task == "interaction"
    apart = pipe.place_object(photo, contacts.human, contacts.object, body, k, object_box=(230, 30, 390, 170))
    assert apart.placed, apart.status
    again = pipe.place_object(photo, contacts.human, contacts.object, body, k, object_box=(230, 30, 390, 170),
                              previous=apart)  # a stream's next fit starts from (and breaks ties by) the last
    assert again.placed and again.report["start_candidates"] == apart.report["start_candidates"] + 1, again.status
    other_mesh = replace(apart, vertices=apart.vertices[:3])  # another object's placement: ignored
    other = pipe.place_object(photo, contacts.human, contacts.object, body, k, object_box=(230, 30, 390, 170),
                              previous=other_mesh)
    assert other.placed and other.report["start_candidates"] == apart.report["start_candidates"]
    # a held object's refit pools the last frame's evidence (pool_frames 1 by default): the same frame again agrees
    assert len(apart.history) == 1 and apart.report["pooled_frames"] == 0
    assert again.report["pooled_frames"] == 1 and again.report["pool_rejected"] == 0, again.report
    assert len(again.history) == 1 and again.history[0] is not apart.history[0]  # the newest, capped at 1
    unpooled = copy.copy(pipe)
    unpooled.fit_config = replace(pipe.fit_config, pool_frames=0)
    alone = unpooled.place_object(photo, contacts.human, contacts.object, body, k, object_box=(230, 30, 390, 170),
                                  previous=apart)
    assert alone.placed and alone.history == () and alone.report["pooled_frames"] == 0  # off: nothing kept
    unplaced = pipe.place_object(photo, contacts.human, contacts.object, no_k.body_placement, k)
    assert not unplaced.placed and "intrinsics" in unplaced.status and "mask or box" in unplaced.status
    tracker = pipe.new_body_tracker(max_people=2, max_missing_s=0.5)
    assert tracker.available and tracker.config.max_people == 2 and tracker.config.max_missing_s == 0.5


def test_missing_assets_say_what_to_download(tmp_path, tiny_checkpoints) -> None:
    with pytest.raises(MissingAssetError, match="checkpoint"):
        InteractionPipeline.load(PipelineConfig(checkpoint_dir=""))
    with pytest.raises(MissingAssetError, match=r"mano\.is\.tue\.mpg\.de"):
        InteractionPipeline.load(PipelineConfig(checkpoint_dir=str(tiny_checkpoints["Gen"])))
    with pytest.raises(MissingAssetError, match=r"SMPLH_NEUTRAL"):
        InteractionPipeline.load(PipelineConfig(checkpoint_dir=str(tiny_checkpoints["Gen"]),
                                                body_model_dir=str(tmp_path)))


# ------------------------------------------------------------------------------------------------ external bodies
@pytest.fixture(scope="module")
def external_pipe(tiny_checkpoints, tiny_body_assets, object_library) -> InteractionPipeline:
    """Interaction pipeline with the keypoint fit on (so the tests see the external body replace it)."""
    _, _, body_dir = tiny_body_assets
    cfg = PipelineConfig(checkpoint_dir=str(tiny_checkpoints["Gen-Hu-Obj"]), body_model_dir=str(body_dir),
                         task="interaction", object_library=str(object_library), fit_human=True,
                         fit_object=True, max_new_tokens=16)
    pipe = InteractionPipeline.load(cfg)
    pipe.fit_config = replace(pipe.fit_config, iterations=40, warmup_iterations=10, start_candidates_without_pose=2)
    return pipe


def _camera_params(transl=(0.1, 0.0, 4.0)) -> dict[str, np.ndarray]:
    """An upright body (SMPL-X y-up turned into the camera's y-down) a few metres in front of the camera."""
    rng = np.random.default_rng(3)
    return {"betas": rng.normal(scale=0.3, size=10), "global_orient": np.array([np.pi, 0.0, 0.0]),
            "body_pose": rng.normal(scale=0.05, size=63), "left_hand_pose": [], "right_hand_pose": [],
            "jaw_pose": np.zeros(3), "expression": [], "transl": np.asarray(transl, dtype=np.float64)}


def _osx_npz(path: Path, body_dir: Path, keep: int | None = None) -> Path:
    """The synthetic SMPL-X body as OSX writes it: far away in its 5000 px virtual crop camera."""
    from ivlm_core.fitting.body_fit import load_body_layer

    layer = load_body_layer(body_dir)
    with torch.no_grad():
        mesh = layer({"global_orient": torch.tensor([[np.pi, 0.0, 0.0]])})
    vertices = mesh.vertices[0].numpy()
    vertices = vertices - vertices.mean(axis=0) + np.array([0.0, 0.0, 30.0])
    faces = layer.faces
    if keep is not None:
        vertices, faces = vertices[:keep], faces[(faces < keep).all(axis=1)]
    np.savez(path, smpl_vertices=vertices[None].astype(np.float32), smpl_faces=faces.astype(np.int32),
             bbox_2=np.array([[220.0, 60.0, 120.0, 330.0]], dtype=np.float32))
    return path


def test_external_smplx_params_replace_the_keypoint_fit(external_pipe, tiny_body_assets, photo) -> None:
    from ivlm_core.fitting.body_fit import load_body_layer
    from ivlm_core.fitting.external_body import parse_smplx_params

    params = _camera_params()
    result = external_pipe.estimate(photo, "tennis_racket", camera_k=_k(photo), object_box=(230, 30, 390, 170),
                                    external_body=params)
    body = result.body_placement
    assert body.placed and "external SMPL-X parameters" in body.status
    assert "body_external" in result.timings_ms and "body_fit" not in result.timings_ms  # mediapipe never ran
    expected = parse_smplx_params(params)
    for name, value in expected.items():
        np.testing.assert_allclose(body.params[name], value, atol=1e-6)
    layer = load_body_layer(tiny_body_assets[2])
    with torch.no_grad():
        posed = layer({name: torch.from_numpy(value)[None] for name, value in expected.items()}).vertices[0]
    np.testing.assert_allclose(body.vertices, posed.numpy(), atol=1e-5)
    assert body.vertices.shape == (external_pipe.contact_vertex_count, 3) == (len(result.human.vertex_contact), 3)
    # The object fit ran against this body: the fitted object sits at the body's depth, not somewhere else.
    placement = result.object_placement
    assert placement.placed, placement.status
    assert abs(np.median(placement.vertices[:, 2]) - np.median(body.vertices[:, 2])) < 1.5

    flat = np.concatenate([expected[name] for name in ("betas", "global_orient", "body_pose", "left_hand_pose",
                                                       "right_hand_pose", "jaw_pose", "expression", "transl")])
    as_flat = external_pipe.estimate(photo, "tennis_racket", task="human_contact", external_body=flat)
    np.testing.assert_allclose(as_flat.body_placement.vertices, body.vertices, atol=1e-5)  # no K needed
    with pytest.raises(InvalidInputError, match="body_pose"):
        external_pipe.estimate(photo, "tennis_racket", external_body={**params, "body_pose": np.zeros(5)})
    with pytest.raises(InvalidInputError, match="external body must be"):
        external_pipe.estimate(photo, "tennis_racket", external_body=3.0)


def test_external_osx_body_is_moved_into_the_camera(external_pipe, tiny_body_assets, photo, tmp_path) -> None:
    body_dir = tiny_body_assets[2]
    path = _osx_npz(tmp_path / "osx_human2.npz", body_dir)
    k = _k(photo)
    result = external_pipe.estimate(photo, "tennis_racket", task="human_contact", camera_k=k, external_body=path)
    body = result.body_placement
    assert body.placed and "OSX" in body.status and "body_fit" not in result.timings_ms
    assert body.vertices.shape == (external_pipe.contact_vertex_count, 3)
    assert 1.0 < np.median(body.vertices[:, 2]) < 15.0  # brought from OSX's ~30 m to this camera's scale
    pixels = body.vertices[:, :2] / body.vertices[:, 2:3] * np.diag(k)[:2] + k[:2, 2]
    centre = np.median(pixels, axis=0)
    assert np.allclose(centre, [220 + 60, 60 + 165], atol=25), centre  # where OSX saw it: the crop centre
    with np.load(path) as data:  # a loaded dict works the same
        from_dict = external_pipe.estimate(photo, "tennis_racket", task="human_contact", camera_k=k,
                                           external_body={key: data[key] for key in data.files})
    np.testing.assert_allclose(from_dict.body_placement.vertices, body.vertices, atol=1e-5)

    no_k = external_pipe.estimate(photo, "tennis_racket", task="human_contact", external_body=path)
    assert not no_k.body_placement.placed and "intrinsics" in no_k.body_placement.status
    short = _osx_npz(tmp_path / "short.npz", body_dir, keep=500)
    with pytest.raises(InvalidInputError, match=f"expected the SMPL-X mesh \\({external_pipe.contact_vertex_count}"):
        external_pipe.estimate(photo, "tennis_racket", camera_k=k, external_body=short)
    with pytest.raises(MissingAssetError, match=r"osx_human2\.npz"):
        external_pipe.estimate(photo, "tennis_racket", camera_k=k, external_body=tmp_path / "missing.npz")


def test_external_params_without_smplx_say_why(tiny_checkpoints, tiny_body_assets, photo, tmp_path) -> None:
    body_dir = tiny_body_assets[2]
    (tmp_path / "smplh").symlink_to(body_dir / "smplh")
    (tmp_path / "smpl_to_smplx.pkl").symlink_to(body_dir / "smpl_to_smplx.pkl")  # SMPL-X contacts, no SMPL-X model
    pipe = InteractionPipeline.load(PipelineConfig(checkpoint_dir=str(tiny_checkpoints["Gen"]),
                                                   body_model_dir=str(tmp_path), max_new_tokens=8))
    result = pipe.estimate(photo, "tennis_racket", camera_k=_k(photo), external_body=_camera_params())
    body = result.body_placement
    assert not body.placed and "need the SMPL-X model" in body.status and "SMPLX_NEUTRAL" in body.status
    assert result.human is not None and result.human.body_model == "smplx"  # contacts are still reported


def test_optional_2d_model_segments_contact_on_the_photo(tiny_checkpoints, tiny_body_assets, photo) -> None:
    """With contact_2d_checkpoint_dir the pipeline also returns the 2D model's contact mask on the photo."""
    _, _, body_dir = tiny_body_assets
    cfg = PipelineConfig(checkpoint_dir=str(tiny_checkpoints["Gen"]), body_model_dir=str(body_dir),
                         contact_2d_checkpoint_dir=str(tiny_checkpoints["Gen"]), max_new_tokens=16)
    pipe = InteractionPipeline.load(cfg)
    result = pipe.estimate(photo, "tennis_racket")
    c2d = result.contact_2d
    assert c2d is not None and c2d.contact_found and "contact_2d" in result.timings_ms
    assert c2d.logits.shape == photo.shape[:2] and c2d.logits.dtype == np.float32
    mask = c2d.mask(0.5)
    np.testing.assert_array_equal(mask, 1 / (1 + np.exp(-c2d.logits.astype(np.float64))) > 0.5)
    assert result.human is not None  # the 3D contact still runs alongside
    pipe.release()
    assert pipe.model is None and pipe.model_2d is None
