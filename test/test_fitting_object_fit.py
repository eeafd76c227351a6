import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
import trimesh
import yaml
from scipy.spatial.transform import Rotation

from ivlm_core.errors import InvalidInputError
from ivlm_core.fitting.object_fit import (
    DEFAULT_CONFIG_PATH,
    FitConfig,
    fit_object,
    fit_object_to_body,
    mask_half_width_px,
)
from ivlm_core.fitting.rotation import rotation_angle_deg
from ivlm_core.pipeline import ObjectPlacement
from ivlm_core.testing.held_object import CAMERA_K as K
from ivlm_core.testing.held_object import held_object_scene


@pytest.fixture(scope="module")
def scene():
    """A box 'torso' 1.6 m away and a small box held against its front, tilted, partly in front of it."""
    rot = Rotation.from_euler("xyz", [20, -30, 15], degrees=True).as_matrix()
    return held_object_scene(trimesh.creation.box((0.14, 0.08, 0.05)), rot)


def _centre_error_cm(s, res):
    centre = s["obj_v"].mean(0)
    return 100 * np.linalg.norm(res.rotation @ centre + res.translation - (s["rot"] @ centre + s["trans"]))


def test_fit_recovers_a_perturbed_pose(scene):
    torch.set_num_threads(1)
    s = scene
    delta = Rotation.from_rotvec(np.radians(12) * np.array([0.6, 0.0, 0.8])).as_matrix()
    centre = s["obj_v"].mean(0)
    r0 = delta @ s["rot"]
    t0 = s["rot"] @ centre + s["trans"] + np.array([0.04, -0.03, 0.04]) - r0 @ centre
    cfg = FitConfig(iterations=150)
    res = fit_object(s["obj_v"], s["obj_f"], s["p_obj"], s["body_v"], s["body_f"], s["p_hum"], s["mask"], K, cfg,
                     init_rotation=r0, init_translation=t0)
    assert rotation_angle_deg(res.rotation, s["rot"]) < 4.0
    assert _centre_error_cm(s, res) < 1.5
    assert np.allclose(res.vertices, s["obj_v"] @ res.rotation.T + res.translation, atol=1e-5)
    rep = res.report
    for key in ("loss_mask", "loss_centroid", "loss_contact", "loss_penetration", "loss_total",
                "contact_distance_m", "penetration_depth_m", "iterations", "fit_time_s", "mask_shift_px",
                "mask_iou_soft"):
        assert np.isfinite(rep[key]), key
    assert rep["mask_iou_soft"] == pytest.approx(1.0 - rep["loss_mask"])
    assert abs(rep["mask_shift_px"]) <= FitConfig().mask_shift_px and "loss_mask_shift_index" not in rep
    assert rep["penetration_depth_m"] < 0.01 and rep["contact_distance_m"] < 0.03
    assert rep["mask_half_width_px"] == mask_half_width_px(s["mask"]) > 3


def test_mask_half_width_is_the_distance_from_its_thickest_point_to_the_outline():
    mask = np.zeros((60, 80), dtype=bool)
    mask[10:30, 5:55] = True  # 20 rows: the middle rows are 10 pixels from the outside
    assert mask_half_width_px(mask) == 10.0
    mask[0:3, 70:80] = True  # a thin strip at the border: the border counts as outline
    assert mask_half_width_px(mask[0:3, 70:80]) == 2.0 and mask_half_width_px(mask) == 10.0
    assert mask_half_width_px(np.zeros((4, 4), dtype=bool)) == 0.0


def test_fit_without_a_start_pose_uses_the_mask_and_contacts(scene):
    torch.set_num_threads(1)
    s = scene
    cfg = FitConfig(iterations=120, start_candidates_without_pose=12, warmup_iterations=20)
    res = fit_object(s["obj_v"], s["obj_f"], s["p_obj"], s["body_v"], s["body_f"], s["p_hum"], s["mask"], K, cfg)
    # 8 contact-normal + 8 principal-axis + 24 cube rotations, each at the mask centre (also refined by ICP)
    # and with its contact patch on the body's
    assert res.report["start_candidates"] == 120 and res.report["hypotheses"] == 12
    assert res.report["iterations"] == 20 + 120
    assert _centre_error_cm(s, res) < 3.0
    rep = res.report
    assert rep["loss_gap"] >= 0 and (rep["runner_up_rotation_deg"] > cfg.distinct_rotation_deg
                                     or rep["runner_up_translation_m"] > cfg.distinct_translation_m)
    assert res.status.startswith("ok") and ("ambiguous" in res.status) == bool(res.report["ambiguous"])
    assert rep["contact_regions"] == rep["contact_regions_touched"] == 1  # one hand, touched


def test_result_converts_to_pose_and_placement(scene):
    s = scene
    res = fit_object_to_body(
        object_vertices=s["obj_v"], object_faces=s["obj_f"], object_contact=s["p_obj"], body_vertices=s["body_v"],
        body_faces=s["body_f"], body_contact=s["p_hum"], object_mask=s["mask"], camera_k=K,
        config=FitConfig(iterations=2, icp_iterations=0), init_rotation=s["rot"], init_translation=s["trans"])
    pose = res.pose_dict()
    q = np.array([pose["orientation"][k] for k in "xyzw"])
    assert np.allclose(Rotation.from_quat(q).as_matrix(), res.rotation, atol=1e-6)
    assert np.allclose([pose["position"][k] for k in "xyz"], res.translation)
    fields = res.placement_kwargs()
    assert set(fields) == {"placed", "status", "rotation", "translation", "scale", "vertices", "report", "history"}
    assert fields["history"] == (res.evidence,)  # the placement's own frame first
    assert fields["vertices"].shape == s["obj_v"].shape
    field_names = {f.name for f in dataclasses.fields(ObjectPlacement)}
    assert set(fields) == field_names  # ObjectPlacement(**fields) is the pipeline's conversion
    assert ObjectPlacement(**fields).placed


def test_config_yaml_matches_the_defaults_and_rejects_typos(tmp_path):
    from_yaml = FitConfig.load()
    assert dataclasses.asdict(from_yaml) == dataclasses.asdict(FitConfig())
    assert FitConfig.load_default() == from_yaml
    assert (from_yaml.weight_mask, from_yaml.weight_centroid, from_yaml.weight_contact) == (5.0, 1e-4, 10.0)
    assert (from_yaml.lr_rotation, from_yaml.lr_translation, from_yaml.iterations) == (0.05, 0.01, 24)
    assert (from_yaml.warmup_iterations, from_yaml.silhouette_resolution) == (24, 64)
    assert (from_yaml.newton_iterations, from_yaml.newton_hessian_every) == (6, 2)
    assert (from_yaml.exact_polish_rounds, from_yaml.exact_polish_starts, from_yaml.exact_polish_samples) == (4, 2, 12)
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["weights"]["mask_typo"] = 1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(InvalidInputError, match="weight_mask_typo"):
        FitConfig.load(bad)


@pytest.mark.parametrize("bad, match", [
    ({"object_test_points": 0}, "object_test_points"),
    ({"body_surface_samples": 0}, "body_surface_samples"),
    ({"iterations": "many"}, "iterations: expected int"),
    ({"optimise_scale": "false"}, "optimise_scale: expected bool"),
    ({"exact_polish_rounds": -1}, "exact_polish_rounds >= 0"),
    ({"exact_polish_samples": 0}, "exact_polish_samples >= 1"),
    ({"exact_polish_turn_deg": -1.0}, "exact_polish_turn_deg"),
    ({"outline_iterations": -1}, "outline_iterations >= 0"),
    ({"outline_robust_px": 0.0}, "outline_robust_px > 0"),
    ({"outline_starts": 0}, "outline_starts >= 1"),
    ({"contact_cap_m": -0.05}, "contact_cap_m >= 0"),
    ({"max_start_regions": 0}, "max_start_regions >= 1"),
    ({"contact_cap_m": float("nan")}, "contact_cap_m >= 0"),
    ({"warmup_keep": -1}, "warmup_keep >= 0"),
    ({"pool_frames": -1}, "pool_frames >= 0"),
    ({"pool_hand_residual_m": 0.0}, "pool_hand_residual_m"),
    ({"pool_max_excess": -1.0}, "pool_max_excess > 0"),
    ({"pool_hand_radius_m": float("nan")}, "pool_hand_radius_m"),
])
def test_malformed_config_values_get_a_clear_error(bad, match):
    with pytest.raises(InvalidInputError, match=match):
        FitConfig.from_dict(bad)


def test_bad_inputs_are_rejected(scene):
    s = scene
    args = [s["obj_v"], s["obj_f"], s["p_obj"], s["body_v"], s["body_f"], s["p_hum"], s["mask"], K]
    empty = list(args)
    empty[6] = np.zeros_like(s["mask"])
    with pytest.raises(InvalidInputError, match="empty"):
        fit_object(*empty)
    short = list(args)
    short[2] = s["p_obj"][:-1]
    with pytest.raises(InvalidInputError, match="per vertex"):
        fit_object(*short)


def test_optional_scale_recovers_a_wrong_metric_scale(scene):
    torch.set_num_threads(1)
    s = scene
    centre = s["obj_v"].mean(0)
    shrunk = (s["obj_v"] - centre) * 0.85 + centre  # the library scale is 15% off
    res = fit_object(shrunk, s["obj_f"], s["p_obj"], s["body_v"], s["body_f"], s["p_hum"], s["mask"], K,
                     FitConfig(iterations=150, optimise_scale=True), init_rotation=s["rot"],
                     init_translation=s["trans"] + np.array([0.02, 0.01, 0.03]))
    assert abs(res.scale * 0.85 - 1.0) < 0.03
    assert np.allclose(res.vertices, res.scale * shrunk @ res.rotation.T + res.translation, atol=1e-5)


def test_exact_polish_only_improves_and_finds_the_masks_widening(scene):
    """The polish after the gradient fit: with one start, six rounds end at an exact total no higher than one
    round (the same first draws, then only improvements), and on a mask grown by 4 px the exact mask term finds
    that growth at the chosen pose; with 0 rounds there is no polish and no exact_* report."""
    from scipy import ndimage

    torch.set_num_threads(1)
    s = scene
    grown = ndimage.binary_dilation(s["mask"], np.hypot(*np.mgrid[-4:5, -4:5]) <= 4)
    base = dict(iterations=30, start_candidates_without_pose=6, warmup_iterations=10, exact_polish_starts=1)
    fits = {}
    for rounds in (0, 1, 6):
        cfg = FitConfig(**base, exact_polish_rounds=rounds)
        fits[rounds] = fit_object(s["obj_v"], s["obj_f"], s["p_obj"], s["body_v"], s["body_f"], s["p_hum"], grown, K,
                                  cfg).report
    assert not any(key.startswith("exact") for key in fits[0])
    assert fits[6]["exact_total"] <= fits[1]["exact_total"]
    # every pose of the pool, then the samples of each round
    assert fits[6]["exact_evaluations"] - fits[1]["exact_evaluations"] == 5 * FitConfig().exact_polish_samples
    assert fits[6]["exact_mask_shift_px"] in (3.0, 4.0, 5.0)
    assert 0.0 <= fits[6]["exact_mask_loss"] < 0.1


def test_body_surface_search_answers_from_a_tracker_only_at_its_own_reach():
    from ivlm_core.fitting import object_fit
    from ivlm_core.fitting.nearest import TrackedNearest

    box = trimesh.creation.box((0.2, 0.2, 0.2))
    surface = object_fit._BodySurface.sample(np.asarray(box.vertices), np.asarray(box.faces), 500, seed=0)
    points = torch.tensor([[0.0, 0.0, 0.13], [0.0, 0.0, 0.5]])
    tracked = TrackedNearest(surface.tree, reach=0.05)
    assert torch.equal(surface.nearest(points, 0.05, tracked), surface.nearest(points, 0.05))
    assert int(surface.nearest(points, 0.05)[1]) == -1  # beyond reach
    with pytest.raises(ValueError, match="stops at"):
        surface.nearest(points, 0.1, tracked)


def test_warm_up_takes_the_optimisers_one_time_import_off_the_first_fit() -> None:
    """In a fresh process torch._dynamo is not loaded until the first optimiser is built; warm_up builds one."""
    script = ("import sys\n"
              "from ivlm_core.fitting import object_fit\n"
              "assert 'torch._dynamo' not in sys.modules\n"
              "object_fit.warm_up()\n"
              "assert 'torch._dynamo' in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_pooled_frames_follow_the_hands_rigid_motion(scene):
    """An earlier frame's evidence is pooled with the rigid motion of the hand (the body vertices near the usable
    contacts, matched by index) from this frame to that one, and its fit comes back moved into this frame; a
    frame of another mesh or body model, or one whose hand did not move rigidly, is skipped and counted."""
    from ivlm_core.fitting import object_fit as of

    s = scene
    cfg = FitConfig(iterations=10, warmup_iterations=4, start_candidates_without_pose=4, exact_polish_rounds=1,
                    pool_frames=3)
    then = fit_object(s["obj_v"], s["obj_f"], s["p_obj"], s["body_v"], s["body_f"], s["p_hum"], s["mask"], K, cfg)
    evidence = then.evidence
    assert evidence is not None and len(evidence.hand) >= 3 and then.report["pooled_frames"] == 0
    # now the body is where G^-1 takes it: the hand moved by G from now to then
    g_rot = Rotation.from_rotvec([0.1, -0.2, 0.15]).as_matrix()
    g_trans = np.array([0.05, -0.02, 0.1])
    body_now = (s["body_v"] - g_trans) @ g_rot  # G^-1 x = R^T (x - t)
    frames, poses, report = of._pooled_frames(cfg, [evidence], s["obj_v"], body_now, evidence.hand)
    assert report["pooled_frames"] == 1 and len(frames) == len(poses) == 1
    np.testing.assert_allclose(frames[0].rotation.numpy(), g_rot, atol=1e-5)
    np.testing.assert_allclose(frames[0].translation.numpy(), g_trans, atol=1e-5)
    rot_now, trans_now = poses[0]
    np.testing.assert_allclose(g_rot @ rot_now, evidence.rotation, atol=1e-9)
    np.testing.assert_allclose(g_rot @ trans_now + g_trans, evidence.translation, atol=1e-9)

    bent = body_now.copy()
    bent[evidence.hand] += np.random.default_rng(0).normal(0.0, 0.02, (len(evidence.hand), 3))  # not rigid
    _, _, report = of._pooled_frames(cfg, [evidence, evidence, evidence], s["obj_v"] * 1.1, body_now, evidence.hand)
    assert report["pooled_frames"] == 0 and report["pool_skipped_mesh"] == 3
    _, _, report = of._pooled_frames(cfg, [evidence], s["obj_v"], body_now[:-1], evidence.hand)
    assert report["pool_skipped_body"] == 1
    _, _, report = of._pooled_frames(cfg, [evidence], s["obj_v"], bent, evidence.hand)
    assert report["pool_skipped_hand"] == 1
    # only the newest pool_frames are looked at
    _, _, report = of._pooled_frames(replace_pool(cfg, 1), [evidence, evidence], s["obj_v"], body_now,
                                     evidence.hand)
    assert report["pooled_frames"] == 1


def replace_pool(cfg: FitConfig, frames: int) -> FitConfig:
    return dataclasses.replace(cfg, pool_frames=frames)


def test_a_pooled_frame_adds_its_exact_total_and_its_fit_to_the_polish(scene):
    """Pooling a frame with the same observations doubles every pose's exact total, and that frame's fit joins
    the polish's starts: the pooled fit ends at a total no higher than twice the frame's own, and the frames
    agree. With pool_frames 0 the history is ignored and the fit is the same as without it."""
    from scipy import ndimage

    torch.set_num_threads(1)
    s = scene
    grown = ndimage.binary_dilation(s["mask"], np.hypot(*np.mgrid[-3:4, -3:4]) <= 3)
    cfg = FitConfig(iterations=20, warmup_iterations=6, start_candidates_without_pose=6, exact_polish_rounds=2)
    args = (s["obj_v"], s["obj_f"], s["p_obj"], s["body_v"], s["body_f"], s["p_hum"], grown, K)
    alone = fit_object(*args, cfg)
    ignored = fit_object(*args, replace_pool(cfg, 0), history=[alone.evidence])
    assert ignored.report["pooled_frames"] == 0
    np.testing.assert_array_equal(ignored.rotation, alone.rotation)
    pooled = fit_object(*args, replace_pool(cfg, 1), history=[alone.evidence])
    assert pooled.report["pooled_frames"] == 1 and pooled.report["pool_rejected"] == 0
    assert abs(pooled.report["pool_excess_max"]) < cfg.pool_max_excess
    assert pooled.report["exact_total"] <= 2 * alone.report["exact_total"] + 1e-9
    assert pooled.report["exact_evaluations"] == alone.report["exact_evaluations"] + 1  # + the frame's own fit
    history = pooled.placement_kwargs()["history"]
    assert len(history) == 1 and history[0] is pooled.evidence


@pytest.mark.parametrize("keep, after_half", [(2, 2), (0, 6)])
def test_after_half_the_short_fit_only_the_kept_hypotheses_go_on(scene, monkeypatch, keep, after_half):
    """warmup_keep: the short fit refines every hypothesis for half its steps, then only the best distinct few
    (0: all of them to the end); the dropped ones are still ranked (rescored with the others) for the finalists."""
    from ivlm_core.fitting import object_fit as of

    s = scene
    sizes = []
    real = of._losses

    def counted(scene_, cfg_, rot, *args, **kwargs):
        sizes.append(len(rot))
        return real(scene_, cfg_, rot, *args, **kwargs)

    monkeypatch.setattr(of, "_losses", counted)
    cfg = FitConfig(iterations=8, warmup_iterations=8, start_candidates_without_pose=6, warmup_keep=keep,
                    exact_polish_rounds=0)
    res = fit_object(s["obj_v"], s["obj_f"], s["p_obj"], s["body_v"], s["body_f"], s["p_hum"], s["mask"], K, cfg)
    assert res.report["hypotheses"] == 6
    # after scoring every start pose: steps 0-4 of the short fit on all 6, steps 5-8 (the last one only scores) on
    # the kept ones, then all 6 rescored on the fine grid
    assert sizes[1:11] == [6] * 5 + [after_half] * 4 + [6]


def test_a_frame_that_disagrees_is_not_pooled(scene):
    """The object turned 35 degrees in the hand since the earlier frame (a new grasp): at the pooled pose one of
    the two frames fits far worse than at its own fit, so the fit drops the pooling and this frame decides alone:
    the same pose as without history."""
    torch.set_num_threads(1)
    s = scene
    turned = Rotation.from_euler("z", 35, degrees=True).as_matrix() @ s["rot"]
    before = held_object_scene(trimesh.creation.box((0.14, 0.08, 0.05)), turned)
    np.testing.assert_array_equal(before["body_v"], s["body_v"])  # the same torso: the hand did not move
    cfg = FitConfig(iterations=20, warmup_iterations=6, start_candidates_without_pose=6, exact_polish_rounds=2)
    then = fit_object(before["obj_v"], before["obj_f"], before["p_obj"], before["body_v"], before["body_f"],
                      before["p_hum"], before["mask"], K, cfg)
    args = (s["obj_v"], s["obj_f"], s["p_obj"], s["body_v"], s["body_f"], s["p_hum"], s["mask"], K, cfg)
    alone = fit_object(*args, history=())
    now = fit_object(*args, history=[then.evidence])
    assert now.report["pool_rejected"] == 1 and now.report["pooled_frames"] == 0, now.report
    assert now.report["pool_excess_max"] > cfg.pool_max_excess
    np.testing.assert_allclose(now.rotation, alone.rotation, atol=1e-6)


def test_the_untrimmed_contact_mean_skips_the_sort_and_equals_the_trimmed_formula() -> None:
    """contact_keep_fraction 1 (the default) takes the weighted mean without topk: the same values and gradient
    as sorting and keeping every distance; a fraction below 1 still drops the farthest."""
    from ivlm_core.fitting import object_fit as of

    generator = torch.Generator().manual_seed(0)
    distance = torch.rand((5, 40), generator=generator, dtype=torch.float64).requires_grad_()
    weight = torch.rand(40, generator=generator, dtype=torch.float64)
    fast = of._trimmed_mean(distance, weight, 1.0)
    kept, index = torch.topk(distance, 40, dim=1, largest=False)
    sorted_mean = (kept * weight[index]).sum(1) / weight[index].sum(1)
    torch.testing.assert_close(fast, sorted_mean)
    (grad_fast,) = torch.autograd.grad(fast.sum(), distance)
    (grad_sorted,) = torch.autograd.grad(sorted_mean.sum(), distance)
    torch.testing.assert_close(grad_fast, grad_sorted)
    trimmed = of._trimmed_mean(distance, weight, 0.5)
    assert bool((trimmed < fast).all())


def test_the_exact_polish_starts_from_different_orientations(scene, monkeypatch):
    """The polish's starts are told apart by rotation only: its search moves the object freely but turns it a
    few degrees, so a second start of the same orientation a few cm away is wasted (a slim handle's true basin
    was left unpolished that way)."""
    from ivlm_core.fitting import object_fit as of

    s = scene
    seen = []
    real = of._exact_polish

    def recorded(*args, **kwargs):
        seen.append(args[7])  # the distinct predicate
        return real(*args, **kwargs)

    monkeypatch.setattr(of, "_exact_polish", recorded)
    cfg = FitConfig(iterations=4, warmup_iterations=4, start_candidates_without_pose=4, exact_polish_rounds=1)
    fit_object(s["obj_v"], s["obj_f"], s["p_obj"], s["body_v"], s["body_f"], s["p_hum"], s["mask"], K, cfg)
    distinct = seen[0]
    pose = (s["rot"], s["trans"])
    assert not distinct(pose, (s["rot"], s["trans"] + np.array([0.05, 0.0, 0.0])))
    turn = Rotation.from_euler("z", 30, degrees=True).as_matrix()
    assert distinct(pose, (turn @ s["rot"], s["trans"]))
