"""Box-prompted object segmentation with the tiny parity SAM (official Segment Anything box semantics)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from parity_data import parity_file
from safetensors.torch import load_file

from ivlm_core.errors import InvalidInputError
from ivlm_core.model.object_mask import ObjectMask, boxes_to_sam_input, clip_box, segment_object
from ivlm_core.model.sam import RELEASED_SAM_PREFIX, ContactSam, SamSpec, sam_preprocess, select_prefixed

BOXES = torch.tensor(
    [[3.0, 10.5, 90.0, 120.0], [0.0, 0.0, 127.0, 127.0], [50.2, 7.7, 51.0, 9.0]], dtype=torch.float32
)


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return select_prefixed(load_file(str(parity_file("sam_decoder", "tiny_sam.safetensors"))), RELEASED_SAM_PREFIX)


@pytest.fixture(scope="module")
def sam(weights: dict[str, torch.Tensor]) -> ContactSam:
    config = json.loads(parity_file("sam_decoder", "config.json").read_text())
    model = ContactSam(SamSpec.from_dict(config["sam"])).eval()
    model.load_released_state_dict(weights)
    return model


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """Non-square photo whose resize rounds differently on the two axes (101x200 -> 65x128 at S=128)."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, size=(101, 200, 3), dtype=np.uint8)
    image[30:70, 60:140] = (200, 40, 40)  # a flat "object" so the prompt region differs from the rest
    return image


def _hand_box_embeddings(boxes: np.ndarray, weights: dict[str, torch.Tensor], side: int) -> np.ndarray:
    """Official `_embed_boxes` in float64 straight from the stored gaussian matrix and point embeddings."""
    gauss = weights["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].double().numpy()
    corner_top_left = weights["prompt_encoder.point_embeddings.2.weight"].double().numpy()[0]
    corner_bottom_right = weights["prompt_encoder.point_embeddings.3.weight"].double().numpy()[0]
    out = []
    for x0, y0, x1, y1 in boxes.astype(np.float64):
        rows = []
        for (x, y), corner in (((x0, y0), corner_top_left), ((x1, y1), corner_bottom_right)):
            normalised = np.array([(x + 0.5) / side, (y + 0.5) / side])
            angles = 2.0 * np.pi * ((2.0 * normalised - 1.0) @ gauss)
            rows.append(np.concatenate([np.sin(angles), np.cos(angles)]) + corner)
        out.append(rows)
    return np.array(out)


def test_box_embeddings_match_hand_computation(sam: ContactSam, weights: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        sparse, dense = sam.box_prompt_embeddings(BOXES)
    expected = _hand_box_embeddings(BOXES.numpy(), weights, sam.spec.image_size)
    assert sparse.shape == (3, 2, 32)
    assert np.abs(sparse.double().numpy() - expected).max() <= 2e-6
    g = sam.spec.embedding_size
    assert dense.shape == (3, 32, g, g)
    no_mask = weights["prompt_encoder.no_mask_embed.weight"].reshape(1, 32, 1, 1)
    assert torch.equal(dense, no_mask.expand(3, 32, g, g))
    # transformers' own box path agrees (it embeds boxes the same way, batched per image).
    with torch.no_grad():
        hf_sparse, _ = sam.prompt_encoder(None, None, BOXES[None], None)
    assert (hf_sparse[0] - sparse).abs().max().item() <= 1e-6


def test_box_embeddings_reject_bad_shapes(sam: ContactSam) -> None:
    with pytest.raises(InvalidInputError, match=r"\(B,4\)"):
        sam.box_prompt_embeddings(torch.zeros(2, 3))
    with pytest.raises(InvalidInputError, match="finite"):
        sam.box_prompt_embeddings(torch.tensor([[0.0, 0.0, float("nan"), 5.0]]))


def test_segment_boxes_picks_best_iou_of_the_multimask_tokens(sam: ContactSam) -> None:
    torch.manual_seed(0)
    g = sam.spec.embedding_size
    embedding = torch.randn(1, 32, g, g)
    input_size, original_size = (96, 128), (150, 200)
    with torch.no_grad():
        logits, iou = sam.segment_boxes(embedding, BOXES, input_size, original_size)
        single_logits, single_iou = sam.segment_boxes(embedding, BOXES, input_size, original_size, multimask=False)
        # Independent path: transformers' native (1 image, B prompts) batching, all four mask tokens.
        sparse, dense = sam.box_prompt_embeddings(BOXES)
        all_masks, all_iou = sam.mask_decoder(
            image_embeddings=embedding,
            image_positional_embeddings=sam.image_positional_embedding(),
            sparse_prompt_embeddings=sparse[None],
            dense_prompt_embeddings=dense[:1],
            multimask_output=False,
        )
        multi_masks, multi_iou = sam.mask_decoder(
            image_embeddings=embedding,
            image_positional_embeddings=sam.image_positional_embedding(),
            sparse_prompt_embeddings=sparse[None],
            dense_prompt_embeddings=dense[:1],
            multimask_output=True,
        )
    assert multi_iou.shape == (1, 3, 3)  # tokens 1..3
    best = multi_iou[0].argmax(dim=1)
    assert logits.shape == (3, 150, 200) and logits.dtype == torch.float32 and iou.shape == (3,)
    assert torch.allclose(iou, multi_iou[0, torch.arange(3), best], atol=1e-6)
    expected = sam.postprocess(multi_masks[0, torch.arange(3), best][:, None], input_size, original_size)
    assert (logits - expected).abs().max().item() <= 1e-5
    # multimask=False is mask token 0
    assert torch.allclose(single_iou, all_iou[0, :, 0], atol=1e-6)
    expected_single = sam.postprocess(all_masks[0, :, :1], input_size, original_size)
    assert (single_logits - expected_single).abs().max().item() <= 1e-5
    assert not torch.allclose(single_logits, logits)  # the two choices really differ on this model
    # each box decodes on its own: batching does not change a box's answer
    with torch.no_grad():
        alone, alone_iou = sam.segment_boxes(embedding, BOXES[2:], input_size, original_size)
    assert (alone[0] - logits[2]).abs().max().item() <= 1e-5
    assert abs(alone_iou.item() - iou[2].item()) <= 1e-6
    with pytest.raises(InvalidInputError, match="ONE image embedding"):
        sam.segment_boxes(embedding.expand(2, -1, -1, -1), BOXES, input_size, original_size)


def test_box_transform_follows_resize_longest_side(sam: ContactSam, photo: np.ndarray) -> None:
    _, input_size = sam_preprocess(photo, sam.spec)
    assert input_size == (65, 128)  # int(101 * 0.64 + 0.5), int(200 * 0.64 + 0.5)
    box = np.array([[10.0, 20.0, 150.0, 90.0]])
    expected = np.array([[10.0 * 128 / 200, 20.0 * 65 / 101, 150.0 * 128 / 200, 90.0 * 65 / 101]])
    assert np.allclose(boxes_to_sam_input(box, (101, 200), input_size), expected, atol=1e-12)
    # the whole photo maps onto the whole un-padded input region
    full = boxes_to_sam_input(np.array([0.0, 0.0, 200.0, 101.0]), (101, 200), input_size)
    assert np.allclose(full, [[0.0, 0.0, 128.0, 65.0]])
    # segment_object prompts SAM with exactly that transformed box
    result = segment_object(sam, photo, box[0])
    with torch.no_grad():
        pixels, _ = sam_preprocess(photo, sam.spec)
        embedding = sam.encode_images(pixels[None])
        logits, iou = sam.segment_boxes(embedding, torch.from_numpy(expected), input_size, (101, 200))
        raw_logits, _ = sam.segment_boxes(embedding, torch.from_numpy(box), input_size, (101, 200))
    assert np.abs(result.logits - logits[0].numpy()).max() <= 1e-5
    assert abs(result.iou - iou.item()) <= 1e-6
    assert np.abs(result.logits - raw_logits[0].numpy()).max() > 1e-3  # the untransformed box would differ


def test_segment_object_shapes_and_determinism(sam: ContactSam, photo: np.ndarray) -> None:
    first = segment_object(sam, photo, (55.0, 25.0, 145.0, 75.0))
    second = segment_object(sam, photo, (55.0, 25.0, 145.0, 75.0))
    assert isinstance(first, ObjectMask)
    assert first.mask.shape == (101, 200) and first.mask.dtype == bool
    assert first.logits.shape == (101, 200) and first.logits.dtype == np.float32
    assert np.array_equal(first.mask, first.logits > 0.0)
    assert isinstance(first.iou, float) and np.isfinite(first.iou)
    assert first.box == (55.0, 25.0, 145.0, 75.0)
    assert np.array_equal(first.logits, second.logits) and first.iou == second.iou
    strict = segment_object(sam, photo, (55.0, 25.0, 145.0, 75.0), threshold=1.0)
    assert np.array_equal(strict.mask, first.logits > 1.0)


def test_box_clipped_to_image(sam: ContactSam, photo: np.ndarray) -> None:
    assert clip_box((-10.0, -5.0, 300.0, 50.0), (101, 200)) == (0.0, 0.0, 200.0, 50.0)
    result = segment_object(sam, photo, np.array([-10.0, -5.0, 300.0, 50.0]))
    clipped = segment_object(sam, photo, (0.0, 0.0, 200.0, 50.0))
    assert result.box == (0.0, 0.0, 200.0, 50.0)
    assert np.array_equal(result.logits, clipped.logits)


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ((10.0, 10.0, float("nan"), 50.0), "finite"),
        ((10.0, 10.0, float("inf"), 50.0), "finite"),
        ((50.0, 10.0, 50.0, 60.0), "x1 > x0"),
        ((60.0, 10.0, 20.0, 60.0), "x1 > x0"),
        ((10.0, 60.0, 50.0, 20.0), "y1 > y0"),
        ((210.0, 10.0, 260.0, 50.0), "outside"),
        ((10.0, -50.0, 50.0, -1.0), "outside"),
        ((10.0, 10.0, 50.0), "4 numbers"),
        (("a", 1, 2, 3), "4 numbers"),
    ],
)
def test_invalid_boxes_rejected(sam: ContactSam, photo: np.ndarray, box: tuple, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        segment_object(sam, photo, box)


def test_invalid_images_rejected(sam: ContactSam, photo: np.ndarray) -> None:
    box = (10.0, 10.0, 50.0, 50.0)
    for image in (photo.astype(np.float32), photo[..., 0], photo[..., :2], np.zeros((0, 5, 3), np.uint8)):
        with pytest.raises(InvalidInputError, match=r"RGB uint8|empty"):
            segment_object(sam, image, box)
    with pytest.raises(InvalidInputError, match="threshold"):
        segment_object(sam, photo, box, threshold=float("nan"))
