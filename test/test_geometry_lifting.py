"""2D->3D lifting: parity with the reference outputs, hand-computed semantics, loaders and the round trip."""

from __future__ import annotations

import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from parity_data import parity_file

from ivlm_core.bench.lift_roundtrip import run_roundtrip
from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.geometry.lifting import LiftingMaps, lift_human_legacy, lift_human_soft, lift_object_mesh
from ivlm_core.geometry.raster import rasterize_views
from ivlm_core.geometry.views import get_view_set

VIEW_NAMES = ["topfront", "bottomfront", "topback", "bottomback"]


@pytest.fixture(scope="module")
def parity() -> dict[str, np.ndarray]:
    with np.load(parity_file("lifting.npz"), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def parity_maps(parity: dict[str, np.ndarray]) -> LiftingMaps:
    return LiftingMaps(
        torch.from_numpy(parity["pixel_to_vertex"]),
        torch.from_numpy(parity["bary"]),
        int(parity["num_vertices"]),
    )


def test_parity_with_reference_outputs(parity: dict[str, np.ndarray], parity_maps: LiftingMaps) -> None:
    logits = torch.from_numpy(parity["logits"])
    soft = lift_human_soft(logits, parity_maps)
    assert soft.shape == (1, 50) and soft.dtype == torch.float32
    np.testing.assert_allclose(soft.numpy(), parity["human_soft"], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(lift_human_legacy(logits, parity_maps).numpy(), parity["human_legacy"])
    np.testing.assert_allclose(
        lift_object_mesh(logits, parity_maps).numpy(), parity["object_mesh"], atol=1e-6, rtol=0
    )
    # Vertices 45-49 are never visible and must come out exactly 0.
    assert (soft[0, 45:] == 0).all()


def test_batched_logits_lift_each_element(parity: dict[str, np.ndarray], parity_maps: LiftingMaps) -> None:
    logits = torch.from_numpy(parity["logits"])
    batch = torch.stack([logits, -logits, logits])
    for lift, key in (
        (lift_human_soft, "human_soft"),
        (lift_human_legacy, "human_legacy"),
        (lift_object_mesh, "object_mesh"),
    ):
        out = lift(batch, parity_maps)
        assert out.shape == (3, 50)
        np.testing.assert_allclose(out[0].numpy(), parity[key][0], atol=1e-6, rtol=0)
        np.testing.assert_array_equal(out[0].numpy(), out[2].numpy())
        assert not torch.equal(out[0], out[1])


def _one_view_maps() -> LiftingMaps:
    # 1 view, 1x3 image, 4 vertices: two pixels on face (0,1,2), one pixel with a stray id (dropped).
    p2v = torch.tensor([[[[0, 1, 2], [0, 1, 2], [0, 3, 9]]]])
    bary = torch.tensor([[[[0.5, 0.25, 0.25], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]]]])
    return LiftingMaps(p2v, bary, num_vertices=4)


def test_soft_rule_by_hand() -> None:
    maps = _one_view_maps()
    logits = torch.tensor([[[0.0, 100.0, 100.0]]])  # p = 0.5 and (clamped) sigmoid(20)
    out = lift_human_soft(logits, maps)[0]
    p_hi = torch.sigmoid(torch.tensor(20.0)).item()
    # vertex 0 and 1 only get weight from pixel 0; vertex 2 from both pixels: (0.25*0.5 + 1*p_hi) / 1.25.
    expected = [0.5, 0.5, (0.25 * 0.5 + p_hi) / 1.25, 0.0]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-7)


def test_object_rule_only_counts_confident_pixels() -> None:
    maps = _one_view_maps()
    logits = torch.tensor([[[-2.0, 30.0, 30.0]]])  # sigmoid(-2) = 0.12 does not vote
    out = lift_object_mesh(logits, maps)[0]
    np.testing.assert_allclose(out.numpy(), [0.0, 0.0, 1.0, 0.0], atol=1e-7)


def test_soft_lifting_is_differentiable() -> None:
    maps = _one_view_maps()
    logits = torch.zeros(1, 1, 1, 3, requires_grad=True)
    lift_human_soft(logits, maps).sum().backward()
    assert logits.grad is not None and logits.grad[0, 0, 0, 0] > 0


def test_mismatched_logits_are_rejected(parity_maps: LiftingMaps) -> None:
    with pytest.raises(InvalidInputError, match="views"):
        lift_human_soft(torch.zeros(1, 3, 64, 64), parity_maps)
    with pytest.raises(InvalidInputError, match="upsample"):
        lift_human_soft(torch.zeros(4, 32, 32), parity_maps)
    with pytest.raises(InvalidInputError):
        lift_human_soft(torch.zeros(64, 64), parity_maps)
    with pytest.raises(InvalidInputError, match="shape"):
        LiftingMaps(torch.zeros(4, 8, 8, 3, dtype=torch.int64), torch.zeros(4, 8, 9, 3), 10)
    with pytest.raises(InvalidInputError, match="share one"):
        LiftingMaps.from_arrays([np.zeros((8, 8, 3)), np.zeros((9, 9, 3))], [np.zeros((8, 8, 3))] * 2, 5)


def test_reference_npz_loader(
    tmp_path: Path, parity: dict[str, np.ndarray], parity_maps: LiftingMaps
) -> None:
    folder = tmp_path / "hcontact_vitruvian"
    folder.mkdir()
    np.savez_compressed(
        folder / "pixel_to_vertex_map_64.npz", **dict(zip(VIEW_NAMES, parity["pixel_to_vertex"]))
    )
    np.savez_compressed(folder / "bary_coords_map_64.npz", **dict(zip(VIEW_NAMES, parity["bary"])))
    maps = LiftingMaps.from_reference_folder(folder, VIEW_NAMES, num_vertices=50, resolution=64)
    assert maps.num_views == 4 and maps.resolution == (64, 64)
    assert torch.equal(maps.pixel_to_vertex, parity_maps.pixel_to_vertex)
    assert torch.equal(maps.bary, parity_maps.bary)
    logits = torch.from_numpy(parity["logits"])
    assert torch.equal(lift_human_soft(logits, maps), lift_human_soft(logits, parity_maps))
    with pytest.raises(InvalidInputError, match="no views"):
        LiftingMaps.from_reference_folder(folder, ["topfront", "sideways"], num_vertices=50, resolution=64)
    with pytest.raises(MissingAssetError, match=r"data\.zip"):
        LiftingMaps.from_reference_folder(folder, VIEW_NAMES, num_vertices=50, resolution=1024)


def test_human_view_set_maps_pick_the_reference_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    p2v = rng.integers(-1, 6890, size=(8, 8, 3))
    bary = rng.dirichlet([1, 1, 1], size=(8, 8)).astype(np.float32)
    folder = tmp_path / "data" / "hcontact_vitruvian"
    folder.mkdir(parents=True)
    np.savez(folder / "pixel_to_vertex_map_8.npz", **{n: p2v + i for i, n in enumerate(VIEW_NAMES)})
    np.savez(folder / "bary_coords_map_8.npz", **{n: bary for n in VIEW_NAMES})
    # The -fix model's _mv2 folder is missing: the identical base folder serves, in the set's view order.
    maps = LiftingMaps.for_human_view_set(tmp_path / "data", "4MV-Z_Vitru_mv2", resolution=8)
    assert maps.num_vertices == 6890 and maps.num_views == 4
    np.testing.assert_array_equal(maps.pixel_to_vertex[2].numpy(), p2v + 2)
    with pytest.raises(InvalidInputError, match="human view set"):
        LiftingMaps.for_human_view_set(tmp_path / "data", "4MV-Z_HM", resolution=8)
    with pytest.raises(MissingAssetError):
        LiftingMaps.for_human_view_set(tmp_path / "nowhere", "4MV-Z_Vitru", resolution=8)


def test_lift2d_pkl_loader(tmp_path: Path, parity: dict[str, np.ndarray], parity_maps: LiftingMaps) -> None:
    path = tmp_path / "lift2d_dict.pkl"
    joblib.dump(
        {
            "pixel_to_vertices_map": [m.astype(np.int64) for m in parity["pixel_to_vertex"]],
            "bary_coords_map": [m.astype(np.float32) for m in parity["bary"]],
            "num_vertices": 50,
        },
        path,
    )
    maps = LiftingMaps.from_lift2d_pkl(path)
    assert maps.num_vertices == 50
    # Our own writer produces the same file content.
    again = LiftingMaps.from_lift2d_pkl(maps.save_lift2d_pkl(tmp_path / "out" / "lift2d_dict.pkl"))
    assert torch.equal(again.pixel_to_vertex, maps.pixel_to_vertex) and torch.equal(again.bary, maps.bary)
    logits = torch.from_numpy(parity["logits"])
    np.testing.assert_allclose(
        lift_object_mesh(logits, maps).numpy(), parity["object_mesh"], atol=1e-6, rtol=0
    )
    joblib.dump({"pixel_to_vertices_map": []}, tmp_path / "bad.pkl")
    with pytest.raises(InvalidInputError, match="num_vertices"):
        LiftingMaps.from_lift2d_pkl(tmp_path / "bad.pkl")
    with pytest.raises(MissingAssetError):
        LiftingMaps.from_lift2d_pkl(tmp_path / "missing.pkl")
    # A pickle that would call a function on load is refused before anything runs.
    marker = tmp_path / "ran"
    with (tmp_path / "hostile.pkl").open("wb") as handle:
        pickle.dump({"num_vertices": _RunsOnLoad(marker)}, handle)
    with pytest.raises(InvalidInputError, match="refusing"):
        LiftingMaps.from_lift2d_pkl(tmp_path / "hostile.pkl")
    assert not marker.exists()


class _RunsOnLoad:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_maps_from_our_rasterizer() -> None:
    verts = np.array([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0], [3.0, 3.0, 3.0]])
    frags = rasterize_views(verts, np.array([[0, 1, 2]]), get_view_set("4MV-Z_Vitru"), 32)
    maps = LiftingMaps.from_fragments(frags, num_vertices=4)
    assert maps.pixel_to_vertex.shape == (4, 32, 32, 3) and maps.pixel_to_vertex.dtype == torch.int64
    out = lift_human_soft(torch.full((4, 32, 32), 5.0), maps)[0]
    np.testing.assert_allclose(out[:3].numpy(), torch.sigmoid(torch.tensor(5.0)).item(), atol=1e-6)
    assert out[3] == 0.0  # never rasterized


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_lifting_follows_the_logits_device(parity: dict[str, np.ndarray], parity_maps: LiftingMaps) -> None:
    logits = torch.from_numpy(parity["logits"]).cuda()
    out = lift_human_soft(logits, parity_maps)
    assert out.device.type == "cuda"
    np.testing.assert_allclose(out.cpu().numpy(), parity["human_soft"], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(
        lift_human_legacy(logits, parity_maps.to("cuda")).cpu().numpy(), parity["human_legacy"]
    )


def test_paint_rasterize_lift_round_trip() -> None:
    result = run_roundtrip(image_size=256, repeats=1)
    assert result.num_faces > 9000
    assert result.iou >= 0.95
