"""SAM wrapper, camera encoder and splitter behaviour on tiny random models (no files needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ivlm_core.errors import CheckpointError, InvalidInputError
from ivlm_core.model.attention_splitter import AttentionSplitter
from ivlm_core.model.camera_encoder import ViV1CameraEncoder, view_conditioned_tokens
from ivlm_core.model.sam import ContactSam, SamSpec, sam_preprocess

TINY = SamSpec(
    image_size=64,
    patch_size=16,
    encoder_embed_dim=16,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    window_size=2,
    mlp_ratio=2.0,
    prompt_embed_dim=16,
    mask_in_chans=4,
    decoder_depth=2,
    decoder_mlp_dim=32,
    decoder_num_heads=2,
    num_multimask_outputs=3,
    iou_head_depth=3,
    iou_head_hidden_dim=16,
    pixel_mean=(123.675, 116.28, 103.53),
    pixel_std=(58.395, 57.12, 57.375),
)


def _randomised_sam(seed: int = 0) -> ContactSam:
    """A tiny SAM whose every tensor (incl. zero-initialised ones) holds random values."""
    torch.manual_seed(seed)
    sam = ContactSam(TINY).eval()
    with torch.no_grad():
        for tensor in sam.state_dict().values():
            tensor.copy_(torch.randn_like(tensor) * 0.3)
    return sam


@pytest.fixture(scope="module")
def sam() -> ContactSam:
    return _randomised_sam()


def test_spec_round_trips_through_dict_and_weights(sam: ContactSam) -> None:
    assert SamSpec.from_dict(TINY.to_dict()) == TINY
    assert SamSpec.from_dict({"sam": TINY.to_dict()}) == TINY
    assert SamSpec.from_released_state_dict(sam.released_state_dict(), decoder_num_heads=2) == TINY
    with pytest.raises(InvalidInputError, match="missing keys"):
        SamSpec.from_dict({k: v for k, v in TINY.to_dict().items() if k != "window_size"})


def test_vit_h_layout_matches_release() -> None:
    """Released ViT-H key names and shapes from spec section 4.3 (built on the meta device: no memory)."""
    with torch.device("meta"):
        big = ContactSam(SamSpec.vit_h())
    sd = big.released_state_dict()
    expected_shapes = {
        "image_encoder.pos_embed": (1, 64, 64, 1280),
        "image_encoder.patch_embed.proj.weight": (1280, 3, 16, 16),
        "image_encoder.blocks.0.attn.rel_pos_h": (27, 80),
        "image_encoder.blocks.7.attn.rel_pos_w": (127, 80),
        "image_encoder.blocks.31.mlp.lin1.weight": (5120, 1280),
        "image_encoder.neck.2.weight": (256, 256, 3, 3),
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": (2, 128),
        "prompt_encoder.point_embeddings.3.weight": (1, 256),
        "prompt_encoder.mask_downscaling.6.weight": (256, 16, 1, 1),
        "mask_decoder.transformer.layers.1.cross_attn_image_to_token.q_proj.weight": (128, 256),
        "mask_decoder.transformer.layers.0.cross_attn_token_to_image.out_proj.weight": (256, 128),
        "mask_decoder.transformer.norm_final_attn.weight": (256,),
        "mask_decoder.output_upscaling.0.weight": (256, 64, 2, 2),
        "mask_decoder.output_upscaling.3.weight": (64, 32, 2, 2),
        "mask_decoder.output_hypernetworks_mlps.3.layers.2.weight": (32, 256),
        "mask_decoder.iou_prediction_head.layers.2.weight": (4, 256),
    }
    for key, shape in expected_shapes.items():
        assert tuple(sd[key].shape) == shape, key
    counts = {
        part: sum(v.numel() for k, v in sd.items() if k.startswith(part) and "gaussian" not in k)
        for part in ("image_encoder", "prompt_encoder", "mask_decoder")
    }
    assert round(counts["image_encoder"] / 1e6, 1) == 637.0
    assert counts["prompt_encoder"] == 6220
    assert round(counts["mask_decoder"] / 1e6, 2) == 4.06


def test_released_state_dict_round_trip(sam: ContactSam) -> None:
    released = sam.released_state_dict()
    assert all(k.split(".")[0] in ("image_encoder", "prompt_encoder", "mask_decoder") for k in released)
    assert "prompt_encoder.not_a_point_embed.weight" in released
    assert "prompt_encoder.mask_downscaling.4.bias" in released
    other = ContactSam(TINY)
    other.load_released_state_dict(released)
    for key, value in other.released_state_dict().items():
        assert torch.equal(value, released[key]), key


def test_loader_is_strict(sam: ContactSam) -> None:
    released = sam.released_state_dict()
    target = ContactSam(TINY)
    missing = {k: v for k, v in released.items() if k != "prompt_encoder.point_embeddings.2.weight"}
    with pytest.raises(
        CheckpointError, match=r"Missing keys: \['prompt_encoder.point_embeddings.2.weight'\]"
    ):
        target.load_released_state_dict(missing)
    unexpected = {**released, "mask_decoder.extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"Unexpected keys: \['mask_decoder.extra.weight'\]"):
        target.load_released_state_dict(unexpected)
    prefixed = {"model.visual_model." + k: v for k, v in released.items()}
    with pytest.raises(CheckpointError, match="prefix removed"):
        target.load_released_state_dict(prefixed)
    bad_shape = {**released, "image_encoder.pos_embed": torch.zeros(1, 8, 8, 16)}
    with pytest.raises(CheckpointError, match=r"image_encoder\.pos_embed: checkpoint \(1, 8, 8, 16\)"):
        target.load_released_state_dict(bad_shape)


def test_shared_prompt_equals_per_view_decoding(sam: ContactSam) -> None:
    torch.manual_seed(1)
    num_views = 4
    embeddings = torch.randn(num_views, 16, 4, 4)
    tokens = torch.randn(1, num_views, 16)
    with torch.no_grad():
        low_res, iou = sam.decode(embeddings, tokens)
        per_view = [sam.decode(embeddings[v : v + 1], tokens) for v in range(num_views)]
        own_token_only = sam.decode(embeddings[:1], tokens[:, :1])[0]
    assert low_res.shape == (num_views, 1, 16, 16) and iou.shape == (num_views, 1)
    torch.testing.assert_close(low_res, torch.cat([p[0] for p in per_view]), atol=1e-6, rtol=0)
    torch.testing.assert_close(iou, torch.cat([p[1] for p in per_view]), atol=1e-6, rtol=0)
    # Each view sees all V tokens: seeing only its own token is a different (wrong) computation.
    assert (own_token_only - low_res[:1]).abs().max() > 1e-2 * low_res[:1].abs().max()


def test_decode_rejects_bad_shapes(sam: ContactSam) -> None:
    with pytest.raises(InvalidInputError):
        sam.decode(torch.zeros(4, 16, 4, 4), torch.zeros(4, 16))
    with pytest.raises(InvalidInputError):
        sam.decode(torch.zeros(4, 8, 4, 4), torch.zeros(1, 4, 16))
    with pytest.raises(InvalidInputError):
        sam.encode_images(torch.zeros(2, 3, 32, 32))


def test_bfloat16_path_runs_and_postprocess_is_float32(sam: ContactSam) -> None:
    half = _randomised_sam().to(torch.bfloat16)
    pixels = torch.randn(2, 3, 64, 64)
    tokens = torch.randn(1, 2, 16)
    with torch.no_grad():
        embeddings = half.encode_images(pixels)
        low_res, _ = half.decode(embeddings, tokens)
        logits = half.postprocess(low_res, (64, 48), (30, 20))
        reference = sam.postprocess(sam.decode(sam.encode_images(pixels), tokens)[0], (64, 48), (30, 20))
    assert embeddings.dtype == low_res.dtype == torch.bfloat16
    assert logits.dtype == torch.float32 and logits.shape == (2, 30, 20)
    assert (logits - reference).abs().max() < 0.1 * reference.abs().max() + 0.05


def test_postprocess_crops_before_resizing(sam: ContactSam) -> None:
    low_res = torch.zeros(1, 1, 16, 16)
    low_res[..., :, 8:] = 5.0  # right half of the padded canvas is padding: it must be cropped away
    out = sam.postprocess(low_res, (64, 32), (10, 10))
    assert out.shape == (1, 10, 10)
    assert out.max() < 1.0


def test_preprocess_non_square_image() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
    pixels, input_size = sam_preprocess(image, TINY)
    assert pixels.shape == (3, 64, 64) and pixels.dtype == torch.float32
    assert input_size == (int(30 * 64 / 50 + 0.5), 64) == (38, 64)
    resized = np.asarray(Image.fromarray(image).resize((64, 38), Image.BILINEAR)).astype(np.float32)
    expected = (resized - np.array(TINY.pixel_mean, np.float32)) / np.array(TINY.pixel_std, np.float32)
    np.testing.assert_allclose(pixels[:, :38].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert torch.count_nonzero(pixels[:, 38:]) == 0
    tall, tall_size = sam_preprocess(rng.integers(0, 256, size=(100, 20, 3), dtype=np.uint8), TINY)
    assert tall_size == (64, 13) and torch.count_nonzero(tall[:, :, 13:]) == 0
    with pytest.raises(InvalidInputError):
        sam_preprocess(image.astype(np.float32), TINY)


def test_camera_encoder_sizes_from_weights_and_formula() -> None:
    torch.manual_seed(0)
    source = ViV1CameraEncoder(num_views=3, out_dim=24, hidden_dim=12)
    encoder = ViV1CameraEncoder.from_state_dict(source.state_dict())
    assert (encoder.num_views, encoder.out_dim) == (3, 24)
    cams = torch.rand(3, 5)
    out = encoder.precompute(cams)
    assert out.shape == (3, 24) and not out.requires_grad
    for v in range(3):
        trunk = torch.relu(source.spatial_encoder[2](torch.relu(source.spatial_encoder[0](cams[v]))))
        torch.testing.assert_close(out[v], torch.sigmoid(source.view_transforms[v](trunk)))
    with pytest.raises(CheckpointError):
        ViV1CameraEncoder.from_state_dict({"view_transforms.0.weight": torch.zeros(2, 2)})
    bad = {**source.state_dict(), "extra": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="extra"):
        ViV1CameraEncoder.from_state_dict(bad)
    with pytest.raises(InvalidInputError):
        encoder(torch.rand(4, 5))
    seg = torch.randn(2, 24)
    tokens = view_conditioned_tokens(seg, out)
    assert tokens.shape == (2, 3, 24)
    torch.testing.assert_close(tokens[1, 2], seg[1] * out[2])
    with pytest.raises(InvalidInputError):
        view_conditioned_tokens(seg, out[:, :8])


def test_attention_splitter_shapes_formula_and_determinism() -> None:
    torch.manual_seed(0)
    splitter = AttentionSplitter(dim=16, hidden=8).eval()
    x = torch.randn(2, 4, 16)
    human, obj = splitter(x)
    assert human.shape == obj.shape == (2, 4, 16)
    again = splitter(x)
    assert torch.equal(human, again[0]) and torch.equal(obj, again[1])
    assert (human - obj).abs().max() > 1e-4
    xp = splitter.input_proj(x)
    k, v = splitter.key(xp), splitter.value(xp)
    attn = torch.softmax(splitter.query_human(xp) @ k.transpose(1, 2) / 8**0.5, dim=-1)
    torch.testing.assert_close(human, splitter.output_proj(attn @ v))
    keys = set(splitter.state_dict())
    assert keys == {
        f"{m}.{p}"
        for m in ("input_proj", "query_human", "query_object", "key", "value", "output_proj")
        for p in ("weight", "bias")
    }
    with pytest.raises(InvalidInputError):
        splitter(torch.randn(4, 16))
