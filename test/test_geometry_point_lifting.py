"""Point-cloud lifting (the reference's ObjectPCAfford3DPredictor) on hand-made maps, the heat-map rule, reading
p2pmap files safely, and ivlm's own point splats against a brute-force z-buffer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.geometry.point_lifting import PointMaps, affordance_heat_maps, lift_point_heat

# two views of 2x3 pixels, 4 points; -1 = no point
MAPPING = np.array([
    [[0, 0, 1], [-1, 2, -1]],
    [[1, -1, 0], [0, -1, -1]],
])  # fmt: skip
HEAT = np.array([
    [[0.2, 0.4, 0.9], [0.7, 0.5, 0.1]],
    [[0.3, 0.8, 0.6], [0.1, 0.2, 0.0]],
], dtype=np.float32)  # fmt: skip
# per view: view 0 -> p0 mean(0.2, 0.4) = 0.3, p1 0.9, p2 0.5; view 1 -> p0 mean(0.6, 0.1) = 0.35, p1 0.3.
# over the views that see the point: p0 (0.3 + 0.35) / 2, p1 (0.9 + 0.3) / 2, p2 0.5 (view 0 only), p3 unseen: 0.
EXPECTED = np.array([0.325, 0.6, 0.5, 0.0], dtype=np.float32)


def test_per_view_mean_then_mean_over_visible_views() -> None:
    maps = PointMaps.from_arrays(list(MAPPING), num_points=4)
    lifted = lift_point_heat(torch.from_numpy(HEAT), maps)
    assert lifted.shape == (1, 4)
    np.testing.assert_allclose(lifted[0].numpy(), EXPECTED, atol=1e-7)
    assert maps.visible_points().tolist() == [True, True, True, False]
    batch = lift_point_heat(torch.from_numpy(np.stack([HEAT, 1.0 - HEAT])), maps)  # (B, V, H, W)
    np.testing.assert_allclose(batch[1].numpy(), [1 - 0.325, 1 - 0.6, 0.5, 0.0], atol=1e-6)


def test_hand_lifted_heat_gives_hand_computed_metrics() -> None:
    from ivlm_core.metrics.affordance import evaluate_affordance

    pred = lift_point_heat(torch.from_numpy(HEAT), PointMaps.from_arrays(list(MAPPING), 4))[0].numpy()
    gt = np.array([1.0, 0.0, 1.0, 0.0])
    result = evaluate_affordance([pred], [gt])
    assert result.sim == pytest.approx((0.325 + 0.5) / 1.425, abs=1e-6)  # min(pred/1.425, gt/2) on points 0, 2
    assert result.mae == pytest.approx((0.675 + 0.6 + 0.5 + 0.0) / 4, abs=1e-6)
    assert result.auc == pytest.approx(0.5)  # positives 0.325, 0.5 beat negative 0.0, lose to 0.6
    # thresholds k/19: {0.325, 0.6, 0.5} for 1 <= k <= 6 (t <= 0.325) -> IoU 2/3; {0.6, 0.5} for 7..9 -> 1/3;
    # {0.6} for k = 10, 11 -> 0; t = 0 -> all 4 -> 1/2; none above 0.6 -> 0
    assert result.aiou == pytest.approx((0.5 + 6 * 2 / 3 + 3 / 3) / 20, abs=1e-6)


def test_heat_maps_are_sigmoid_on_rendered_pixels_only() -> None:
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 3.0]]])
    renders = np.full((1, 2, 2, 3), 255, np.uint8)
    renders[0, 0, 0] = (100, 30, 200)
    renders[0, 1, 1] = (255, 255, 254)  # not pure white: rendered
    heat = affordance_heat_maps(logits, renders)
    assert heat[0, 0, 0] == pytest.approx(0.5) and heat[0, 1, 1] == pytest.approx(torch.sigmoid(torch.tensor(3.0)))
    assert heat[0, 0, 1] == 2.0 and heat[0, 1, 0] == -1.0  # white background keeps the raw logit (reference)
    with pytest.raises(InvalidInputError, match="renders"):
        affordance_heat_maps(logits, renders[:, :1])


def test_point_maps_reject_bad_indices_and_shapes() -> None:
    with pytest.raises(InvalidInputError, match="4 points"):
        PointMaps.from_arrays([np.array([[0, 4]])], 4)
    with pytest.raises(InvalidInputError, match=r"-2"):
        PointMaps.from_arrays([np.array([[-2, 0]])], 4)
    with pytest.raises(InvalidInputError, match="integer"):
        PointMaps.from_arrays([np.zeros((2, 2), np.float32)], 4)
    with pytest.raises(InvalidInputError, match="2 views of 2x3"):
        lift_point_heat(HEAT[:, :1], PointMaps.from_arrays(list(MAPPING), 4))


def test_p2pmap_files_are_read_without_unpickling(tmp_path: Path) -> None:
    paths = []
    for v, mapping in enumerate(MAPPING):
        paths.append(tmp_path / f"p2pmap_Mug_1_grasp_{v}.npz")
        np.savez(paths[-1], mapping=mapping)
    maps = PointMaps.from_p2pmap_files(paths, 4)
    np.testing.assert_array_equal(maps.mapping.numpy(), MAPPING)

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    crafted = tmp_path / "p2pmap_crafted.npz"
    payload = np.empty(1, dtype=object)
    payload[0] = Payload()
    np.savez(crafted, mapping=payload)
    with pytest.raises(InvalidInputError, match="plain npz"):
        PointMaps.from_p2pmap_files([crafted], 4)
    assert not marker.exists()
    np.savez(tmp_path / "other.npz", idx=MAPPING[0])
    with pytest.raises(InvalidInputError, match="no 'mapping'"):
        PointMaps.from_p2pmap_files([tmp_path / "other.npz"], 4)
    with pytest.raises(MissingAssetError, match=r"gone\.npz"):
        PointMaps.from_p2pmap_files([tmp_path / "gone.npz"], 4)


def test_splat_matches_a_brute_force_z_buffer() -> None:
    from ivlm_core.geometry.point_splat import normalize_point_cloud, render_point_views, splat_point_map
    from ivlm_core.geometry.shading import xyz_vertex_colours
    from ivlm_core.geometry.views import get_view_set, pixel_centers_ndc, world_to_ndc

    points = np.random.default_rng(3).normal(size=(60, 3))
    unit = normalize_point_cloud(points)
    assert np.linalg.norm(unit, axis=1).max() == pytest.approx(1.0) and np.allclose(unit.mean(axis=0), 0)
    size, radius = 24, 0.12
    for view in get_view_set("4MV-Z_HM", dist=2.0):
        ndc = world_to_ndc(unit, view)
        centres = pixel_centers_ndc(size)
        dy = centres[None, :, None] - ndc[:, 1, None, None]
        dx = centres[None, None, :] - ndc[:, 0, None, None]
        d2 = dy**2 + dx**2
        inside = d2 <= radius**2
        depth = np.where(inside, ndc[:, 2, None, None], np.inf)
        expected = np.where(inside.any(axis=0), np.argmin(depth, axis=0), -1)
        np.testing.assert_array_equal(splat_point_map(unit, view, size, radius), expected)

    renders, maps = render_point_views(points, image_size=size, radius=radius)
    assert renders.shape == (4, size, size, 3) and maps.num_points == 60 and maps.resolution == (size, size)
    hit = maps.mapping.numpy() >= 0
    assert (renders[~hit] == 255).all()  # white background
    colours = (np.clip(xyz_vertex_colours(unit), 0, 1).astype(np.float32) * np.float32(255)).astype(np.uint8)
    np.testing.assert_array_equal(renders[hit], colours[maps.mapping.numpy()[hit]])
    # rendered pixels are exactly the mapped ones, so the heat-map rule and the maps agree
    assert ((renders.astype(int).sum(-1) < 765) == hit).all()


def test_points_behind_the_camera_are_not_splatted() -> None:
    from ivlm_core.geometry.point_splat import splat_point_map
    from ivlm_core.geometry.views import CameraView, camera_center

    view = CameraView("front", 2.0, 0.0, 0.0)
    eye = camera_center(view)  # (0, 0, 2), looking at the origin
    points = np.array([[0.0, 0.0, 0.0], eye * 1.5])  # the second is behind the camera
    mapping = splat_point_map(points, view, 16, 0.2)
    assert set(np.unique(mapping)) == {-1, 0}


@pytest.mark.cuda
def test_lifting_and_heat_maps_on_cuda_match_cpu() -> None:
    maps = PointMaps.from_arrays(list(MAPPING), num_points=4)
    logits = torch.from_numpy(np.log(HEAT + 0.05) - np.log(1.05 - HEAT))
    renders = np.full((2, 2, 3, 3), 255, np.uint8)
    renders[MAPPING >= 0] = 90
    cpu = lift_point_heat(affordance_heat_maps(logits, renders), maps)
    gpu = lift_point_heat(affordance_heat_maps(logits.cuda(), renders), maps)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-6, rtol=1e-6)
