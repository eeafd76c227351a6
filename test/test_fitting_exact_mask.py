"""ExactMaskScore: the fit's mask term without approximations (full-resolution render, the body's z-buffer,
whole-pixel erosion/dilation), on a box seen by a small camera with a plate in front of part of it."""

import numpy as np
import pytest
import trimesh
from scipy import ndimage
from scipy.spatial.transform import Rotation

from ivlm_core.errors import InvalidInputError
from ivlm_core.fitting.exact_mask import ExactMaskScore
from ivlm_core.fitting.zbuffer import render_depth

K = np.array([[200.0, 0.0, 80.0], [0.0, 200.0, 60.0], [0.0, 0.0, 1.0]])
HW = (120, 160)


@pytest.fixture()
def scene():
    box = trimesh.creation.box((0.12, 0.08, 0.05))
    rotation = Rotation.from_euler("xyz", [20, 30, 10], degrees=True).as_matrix()
    translation = np.array([0.0, 0.0, 0.6])
    # a plate nearer the camera, covering the box's left part: the body in front
    plate = trimesh.creation.box((0.06, 0.2, 0.01))
    plate_v = np.asarray(plate.vertices) + np.array([-0.06, 0.0, 0.5])
    posed = np.asarray(box.vertices) @ rotation.T + translation
    visible = render_depth([(plate_v, plate.faces), (posed, box.faces)], K, HW).mesh_index == 1
    return box, rotation, translation, (plate_v, np.asarray(plate.faces)), visible


def _disk(r):
    return np.hypot(*np.mgrid[-r : r + 1, -r : r + 1]) <= r


def test_the_visible_mask_grown_or_shrunk_is_matched_exactly_at_the_true_pose(scene):
    box, rotation, translation, plate, visible = scene
    full = render_depth([(np.asarray(box.vertices) @ rotation.T + translation, box.faces)], K, HW).mask
    assert 0 < visible.sum() < full.sum()  # the plate hides part of the box
    for mask, shift in ((visible, 0), (ndimage.binary_dilation(visible, _disk(5)), 5),
                        (ndimage.binary_erosion(visible, _disk(3)), -3)):
        score = ExactMaskScore.from_meshes(box.vertices, box.faces, *plate, mask, K, shift_cost=0.004)
        loss, found = score(rotation, translation)
        assert found == shift
        assert loss == pytest.approx(0.004 * abs(shift), abs=1e-12)  # IoU 1: only the shift's cost


def test_a_turned_or_moved_pose_scores_worse_and_the_body_hides_what_it_covers(scene):
    box, rotation, translation, plate, visible = scene
    mask = ndimage.binary_dilation(visible, _disk(4))
    score = ExactMaskScore.from_meshes(box.vertices, box.faces, *plate, mask, K)
    at_truth = score(rotation, translation)[0]
    turned = Rotation.from_rotvec([0.0, 0.0, np.radians(8)]).as_matrix() @ rotation
    assert score(turned, translation)[0] > at_truth + 0.02
    assert score(rotation, translation + np.array([0.01, 0.0, 0.0]))[0] > at_truth + 0.02
    # without the plate the whole box is drawn: the hidden part no longer matches the mask
    no_body = ExactMaskScore.from_meshes(box.vertices, box.faces, None, None, mask, K)
    assert no_body(rotation, translation)[0] > at_truth + 0.02


def test_every_shift_is_scored_as_the_erosion_or_dilation_of_the_visible_object_would_be(scene):
    """The counting by distances equals eroding / dilating the visible render with a disk and taking the IoU,
    shift by shift, at poses away from the truth, where the mask is neither the visible part nor its outline
    moved (the image border included: a box partly out of the picture)."""
    box, rotation, translation, plate, visible = scene
    mask = ndimage.binary_erosion(visible, _disk(2))
    score = ExactMaskScore.from_meshes(box.vertices, box.faces, *plate, mask, K, max_shift_px=6,
                                       shift_cost=0.003)
    rng = np.random.default_rng(3)
    poses = [(Rotation.from_rotvec(rng.normal(0.0, 0.2, 3)).as_matrix() @ rotation,
              translation + rng.normal(0.0, 0.02, 3)) for _ in range(6)]
    poses.append((rotation, translation + np.array([0.2, 0.0, 0.0])))  # the box's right part out of the image
    for rot, trans in poses:
        seen = render_depth([(plate[0], plate[1]), (np.asarray(box.vertices) @ rot.T + trans, box.faces)], K,
                            HW).mesh_index == 1
        losses = []
        for shift in range(-6, 7):
            if shift >= 0:
                moved = ndimage.binary_dilation(seen, _disk(shift)) if shift else seen
            else:  # beyond the image nothing is visible: the border erodes too
                moved = ndimage.binary_erosion(np.pad(seen, 1), _disk(-shift))[1:-1, 1:-1]
            iou = (moved & mask).sum() / (moved | mask).sum()
            losses.append(1.0 - iou + 0.003 * abs(shift))
        loss, found = score(rot, trans)
        assert loss == pytest.approx(min(losses), abs=1e-12)
        assert found == range(-6, 7)[int(np.argmin(losses))]


def test_an_object_out_of_view_scores_one(scene):
    box, rotation, _, plate, visible = scene
    score = ExactMaskScore.from_meshes(box.vertices, box.faces, *plate, visible, K)
    assert score(rotation, np.array([0.0, 0.0, -1.0])) == (1.0, 0)  # behind the camera
    assert score(rotation, np.array([5.0, 0.0, 0.6])) == (1.0, 0)  # far to the side


def test_bad_inputs_say_what_is_wrong(scene):
    box, rotation, _, plate, visible = scene
    with pytest.raises(InvalidInputError, match="non-empty"):
        ExactMaskScore.from_meshes(box.vertices, box.faces, *plate, np.zeros(HW, bool), K)
    with pytest.raises(InvalidInputError, match="faces"):
        ExactMaskScore.from_meshes(box.vertices, np.array([[0, 1, 99]]), *plate, visible, K)
    with pytest.raises(InvalidInputError, match="camera_k"):
        ExactMaskScore.from_meshes(box.vertices, box.faces, *plate, visible, np.eye(2))
    score = ExactMaskScore.from_meshes(box.vertices, box.faces, *plate, visible, K)
    with pytest.raises(InvalidInputError, match="finite"):
        score(rotation, np.array([0.0, np.nan, 0.6]))
