"""The mask term measured along the visible outline (``outline_align``) and the finalists' refinement on it."""

import cv2
import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation

from ivlm_core.fitting import object_fit as of
from ivlm_core.fitting.exact_mask import ExactMaskScore
from ivlm_core.fitting.outline_align import OutlineTarget
from ivlm_core.fitting.rotation import rotation_angle_deg
from ivlm_core.fitting.zbuffer import render_depth
from ivlm_core.testing.held_object import CAMERA_K as K
from ivlm_core.testing.held_object import held_object_scene


@pytest.fixture(scope="module")
def held_box():
    rot = Rotation.from_euler("xyz", [20, -30, 15], degrees=True).as_matrix()
    s = held_object_scene(trimesh.creation.box((0.14, 0.08, 0.05)), rot)
    s["centre"] = s["obj_v"].mean(0)
    s["body_depth"] = render_depth([(s["body_v"], s["body_f"])], K, s["mask"].shape).depth
    return s


def _target(s, mask=None, body_depth=None):
    mask = s["mask"] if mask is None else mask
    depth = s["body_depth"] if body_depth is None else body_depth
    return OutlineTarget.build(s["obj_v"] - s["centre"], s["obj_f"], mask, depth, K)


def _pose(s, turn_deg=0.0, axis=(1.0, 0.0, 0.0), move_m=(0.0, 0.0, 0.0)):
    """The true pose (centred frame) turned about its centre by turn_deg and moved."""
    axis = np.asarray(axis) / np.linalg.norm(axis)
    rot = Rotation.from_rotvec(np.radians(turn_deg) * axis).as_matrix() @ s["rot"]
    return rot, s["rot"] @ s["centre"] + s["trans"] + np.asarray(move_m)


def _misfit(target, samples, rot, trans):
    as_t = (torch.tensor(rot[None], dtype=torch.float32), torch.tensor(trans[None], dtype=torch.float32))
    return float(target.misfit(samples, *as_t, robust_px=0.5)[0])


def test_the_misfit_vanishes_at_the_true_pose_and_reads_the_masks_offset(held_box):
    s = held_box
    rot, trans = _pose(s)
    samples = _target(s).samples(rot, trans)
    assert samples is not None and abs(samples.shift) < 0.3
    assert _misfit(_target(s), samples, rot, trans) < 0.01
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))  # radius 4 px
    for mask, expected in ((cv2.dilate(s["mask"].astype(np.uint8), disk), 4.0),
                           (cv2.erode(s["mask"].astype(np.uint8), disk), -4.0)):
        target = _target(s, mask.astype(bool))
        moved = target.samples(rot, trans)
        assert moved.shift == pytest.approx(expected, abs=0.6)
        assert _misfit(target, moved, rot, trans) < 0.02


def test_the_misfit_grows_with_the_pose_error_and_stays_below_one_minus_iou(held_box):
    """The area between the outlines over the mask's area, less where they are within the Huber zone: at most
    about 1 - IoU, and growing with the error (beyond the mask's pixel steps, a few tenths of a pixel)."""
    s = held_box
    target = _target(s)
    exact = ExactMaskScore.from_meshes(s["obj_v"], s["obj_f"], s["body_v"], s["body_f"], s["mask"], K,
                                       shift_cost=0.0)
    misfits = []
    for turn in (4.0, 8.0, 12.0):
        rot, trans = _pose(s, turn, axis=(1.0, 2.0, 0.5))
        misfits.append(_misfit(target, target.samples(rot, trans), rot, trans))
        assert 0.0 < misfits[-1] < 1.2 * exact(rot, trans - rot @ s["centre"])[0]
    assert misfits[0] < misfits[1] < misfits[2]


def test_outline_points_the_body_hides_are_not_compared(held_box):
    s = held_box
    rot, trans = _pose(s)
    full = _target(s, body_depth=np.full(s["mask"].shape, np.inf)).samples(rot, trans)
    cam = full.local.double().numpy() @ rot.T + trans
    u = K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2]
    cut = float(np.median(u))
    wall = np.full(s["mask"].shape, np.inf)
    wall[:, : int(cut)] = 0.01  # a wall 1 cm from the camera hides everything left of the cut
    half = _target(s, body_depth=wall).samples(rot, trans)
    cam = half.local.double().numpy() @ rot.T + trans
    assert len(half.local) < 0.7 * len(full.local)
    assert (K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2] >= int(cut) - 1).all()


def test_an_eroded_or_dilated_mask_drops_the_outline_it_cannot_show():
    """A box with a rod ~6 px thick: eroded by 5 px, the mask has lost the rod; the rod's outline is not
    compared (it would read as a pose error), the box's outline still reads the offset, and the true pose
    keeps a misfit near zero, below a pose turned a few degrees. Dilated by 5 px, the gap between the rod and
    the box fills: the outline lining it is not compared either."""
    box = trimesh.creation.box((0.14, 0.08, 0.05))
    rod = trimesh.creation.box((0.12, 0.015, 0.015))
    rod.apply_translation((0.11, 0.0, 0.0))
    fork = trimesh.creation.box((0.015, 0.015, 0.015))  # closes a 6 px gap between the rod's tip and the box
    fork.apply_translation((0.045, 0.035, 0.0))
    rot = Rotation.from_euler("xyz", [10, -15, 5], degrees=True).as_matrix()
    s = held_object_scene(trimesh.util.concatenate([box, rod, fork]), rot)
    s["centre"] = s["obj_v"].mean(0)
    s["body_depth"] = render_depth([(s["body_v"], s["body_f"])], K, s["mask"].shape).depth
    truth = _pose(s)
    exact = _target(s).samples(*truth)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))  # radius 5 px
    eroded = cv2.erode(s["mask"].astype(np.uint8), disk).astype(bool)
    cols = np.nonzero(s["full"].any(0))[0]
    assert eroded.any() and not eroded[:, cols.max() - 20 :].any()  # the rod is gone from the mask
    for mask, offset in ((eroded, -5.0), (cv2.dilate(s["mask"].astype(np.uint8), disk).astype(bool), 5.0)):
        target = _target(s, mask)
        moved = target.samples(*truth)
        assert moved.shift == pytest.approx(offset, abs=0.7)
        assert len(moved.local) < 0.95 * len(exact.local)
        at_truth = _misfit(target, moved, *truth)
        assert at_truth < 0.03
        turned = _pose(s, 6.0, axis=(1.0, 2.0, 0.5))
        assert _misfit(target, target.samples(*turned), *turned) > at_truth
    # what the erosion dropped is the rod's outline: the exact mask compares points along it, the eroded one none
    def along_rod(samples) -> int:
        return int(((samples.local.double().numpy() + s["centre"])[:, 0] > 0.08).sum())

    assert along_rod(exact) > 10 and along_rod(_target(s, eroded).samples(*truth)) == 0


def test_no_samples_for_an_object_behind_the_camera_or_out_of_the_image(held_box):
    s = held_box
    rot, trans = _pose(s)
    target = _target(s)
    assert target.samples(rot, trans * np.array([1.0, 1.0, -1.0])) is None
    assert target.samples(rot, trans + np.array([5.0, 0.0, 0.0])) is None


def test_the_outline_refinement_matches_the_outline_without_losing_the_pose(held_box):
    """From 3-4 degrees off, the refinement brings the outline's misfit down to about the true pose's (the rest
    of the pose is the image-free terms' and the silhouette's own ambiguity: a box turned a few degrees about
    some axes draws almost the same outline), lowers the energy and does not lead away from the true pose."""
    s = held_box
    cfg = of.FitConfig()
    args = (s["obj_v"] - s["centre"], s["obj_f"], s["p_obj"], s["body_v"], s["body_f"], s["p_hum"], s["mask"], K,
            True)
    scene = of._prepare(cfg, *args)
    target = _target(s)
    starts = [_pose(s, 4.0, axis=(1.0, 2.0, 0.5), move_m=(0.004, -0.003, 0.0)),
              _pose(s, 3.0, axis=(-1.0, 0.3, 1.0), move_m=(-0.002, 0.0, 0.004))]
    start = of._Batch(torch.tensor(np.stack([r for r, _ in starts]), dtype=torch.float32),
                      torch.tensor(np.stack([t for _, t in starts]), dtype=torch.float32), torch.ones(2),
                      torch.zeros(2), ["a", "b"])
    trail: list = []
    out = of._refine_outline(scene, cfg, target, start, trail)
    truth = _pose(s)
    at_truth = _misfit(target, target.samples(*truth), *truth)
    for b, (rot, trans) in enumerate(starts):
        found = out.rotation[b].double().numpy(), out.translation[b].double().numpy()
        before = _misfit(target, target.samples(rot, trans), rot, trans)
        after = _misfit(target, target.samples(*found), *found)
        assert after < 0.2 * before and after < 1.5 * at_truth
        assert rotation_angle_deg(found[0], s["rot"]) < rotation_angle_deg(rot, s["rot"]) + 0.5
        assert np.linalg.norm(found[1] - truth[1]) < 0.005
    assert torch.isfinite(out.loss).all()
    assert trail and all(r.shape[1:] == (3, 3) for r, _ in trail)


def test_the_fit_runs_the_outline_refinement_unless_switched_off(held_box, monkeypatch):
    s = held_box
    calls = []
    original = of._refine_outline

    def spy(*args, **kwargs):
        calls.append(len(args[3].labels))
        return original(*args, **kwargs)

    monkeypatch.setattr(of, "_refine_outline", spy)
    fit_args = (s["obj_v"], s["obj_f"], s["p_obj"], s["body_v"], s["body_f"], s["p_hum"], s["mask"], K)
    cfg = of.FitConfig.load_default()
    assert cfg.outline_iterations > 0  # the shipped default runs it: the finalists and other short fits
    result = of.fit_object(*fit_args, cfg)
    assert len(calls) == 1 and cfg.finalists <= calls[0] <= cfg.outline_starts
    assert rotation_angle_deg(result.rotation, s["rot"]) < 5.0
    of.fit_object(*fit_args, of.FitConfig(outline_iterations=0, iterations=10, warmup_iterations=4,
                                          start_candidates_without_pose=4))
    assert len(calls) == 1


def test_a_closed_mesh_draws_only_its_front_faces_with_the_same_outline(held_box):
    s = held_box
    rot, trans = _pose(s, 5.0, axis=(0.3, 1.0, 0.2))
    every = _target(s).samples(rot, trans)
    front = OutlineTarget.build(s["obj_v"] - s["centre"], s["obj_f"], s["mask"], s["body_depth"], K,
                                closed=True).samples(rot, trans)
    torch.testing.assert_close(front.local, every.local)
    assert front.shift == every.shift
