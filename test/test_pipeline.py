"""The whole pipeline on a tiny released-layout checkpoint and synthetic body models, end to end.

Covers what the node relies on: SMPL-X contacts on the display body, object contact on a library mesh,
the body placed in the camera frame from a real photo, the object fitted to it, and stated reasons when
something cannot be placed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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
    with pytest.raises(InvalidInputError, match="object query is empty"):
        pipe.estimate(photo, "  ")
    with pytest.raises(InvalidInputError, match="RGB uint8"):
        pipe.estimate(photo.astype(np.float32), "tennis_racket")


def test_interaction_places_body_and_object(tiny_checkpoints, tiny_body_assets, object_library, photo) -> None:
    pytest.importorskip("mediapipe")
    _, _, body_dir = tiny_body_assets
    cfg = PipelineConfig(checkpoint_dir=str(tiny_checkpoints["Gen-Hu-Obj"]), body_model_dir=str(body_dir),
                         task="interaction", object_library=str(object_library), fit_human=True,
                         fit_object=True, max_new_tokens=16)
    pipe = InteractionPipeline.load(cfg)
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
    no_k = pipe.estimate(photo, "tennis_racket")
    assert not no_k.body_placement.placed and "intrinsics" in no_k.body_placement.status


def test_missing_assets_say_what_to_download(tmp_path, tiny_checkpoints) -> None:
    with pytest.raises(MissingAssetError, match="checkpoint"):
        InteractionPipeline.load(PipelineConfig(checkpoint_dir=""))
    with pytest.raises(MissingAssetError, match=r"mano\.is\.tue\.mpg\.de"):
        InteractionPipeline.load(PipelineConfig(checkpoint_dir=str(tiny_checkpoints["Gen"])))
    with pytest.raises(MissingAssetError, match=r"SMPLH_NEUTRAL"):
        InteractionPipeline.load(PipelineConfig(checkpoint_dir=str(tiny_checkpoints["Gen"]),
                                                body_model_dir=str(tmp_path)))
