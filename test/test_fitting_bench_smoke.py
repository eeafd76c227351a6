import re

import numpy as np
import pytest
import yaml

from ivlm_core.bench import fit_recovery
from ivlm_core.fitting.object_fit import DEFAULT_CONFIG_PATH
from ivlm_core.fitting.zbuffer import render_depth


def test_fit_recovery_bench_runs_and_prints_the_summary_line(tmp_path, capsys):
    cfg = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    # smoke test only (few hypotheses and steps): the figures come from the full run
    cfg.update(iterations=30, warmup_iterations=8, start_candidates_without_pose=6, finalists=2)
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    fit_recovery.main(["--scenes", "2", "--config", str(path), "--stream", "--diagnose",
                       "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out.strip().splitlines()
    number = r"(\d+\.\d+|inf|nan)"
    match = re.fullmatch(
        rf"success={number} success_noisy={number} rot_err_deg={number} trans_err_cm={number} "
        rf"worst_rot_deg={number} fit_s={number}", out[-1])
    assert match, out[-1]
    assert 0.0 <= float(match.group(1)) <= 1.0 and 0.0 <= float(match.group(2)) <= 1.0
    assert any(line.startswith("clean: 2 fits") for line in out)
    assert "machine: " in out[0] and " CPUs, load " in out[0]  # the conditions name the machine
    assert any(line.startswith("noisy: 2 fits") for line in out)
    assert any(line.startswith("stream: 2 fits") for line in out)
    assert any(line.startswith("next: 2 fits") for line in out)
    assert any(line.startswith("pooled: 2 fits") for line in out)
    assert any("p90" in line and "worst" in line for line in out)
    # each condition splits its fits by the visible object's half-width, every fit in one bin
    widths = [line for line in out if "successes by the visible object's half-width" in line]
    assert len(widths) == 5
    for line in widths:
        assert sum(int(n) for n in re.findall(r": \d+/(\d+)", line)) == 2
    # --diagnose: one verdict under each miss
    fits = [line for line in out if line.startswith("scene ")]
    errors = [re.search(r"rot=\s*([\d.]+)deg trans=\s*([\d.]+)cm", line) for line in fits]
    misses = sum(m is None or float(m.group(1)) > 5 or float(m.group(2)) > 2 for m in errors)
    assert sum(line.strip().startswith("from near the true pose") for line in out) == misses
    # one overlay and one .glb per fit that placed the object (2 scenes x clean + noisy + next + stream + pooled)
    placed = sum("REFUSED" not in line for line in out if line.startswith("scene "))
    assert len(list((tmp_path / "out").glob("*.png"))) == placed == len(list((tmp_path / "out").glob("*.glb")))


def test_noise_flips_labels_adds_a_blob_and_changes_the_mask():
    import tempfile

    import numpy as np

    objects = fit_recovery.make_objects()
    with tempfile.TemporaryDirectory() as tmp:
        poser = fit_recovery.BodyPoser(tmp)
    rng = np.random.default_rng(0)
    clean = fit_recovery.make_scene(objects[0], poser, rng, at_hand=True)
    noisy = fit_recovery.add_noise(clean, poser, np.random.default_rng(1))
    flipped = (clean.object_contact > 0.3) != (noisy.object_contact > 0.3)
    positives = (clean.object_contact > 0.3).sum()
    assert 0.1 * positives * 2 - 2 <= flipped.sum() <= 0.2 * positives * 2 + 2  # misses + as many false ones
    new_human = (noisy.human_contact > 0.5) & ~(clean.human_contact > 0.5)
    far = np.linalg.norm(clean.body_vertices - clean.body_vertices[clean.anchor], axis=1) > 0.15
    assert (new_human & far).sum() >= 3  # the blob on the other hand
    changed = (noisy.mask != clean.mask).sum()
    assert changed > 0.1 * clean.mask.sum()
    assert clean.occluded <= fit_recovery.MAX_OCCLUDED


def _outline_offsets(noisy: "fit_recovery.Scene") -> np.ndarray:
    """Distances (px) of the noisy mask's outline pixels from the exact visible mask it was made from."""
    from scipy import ndimage

    exact = fit_recovery.visible_mask(noisy)
    outline = noisy.mask & ~ndimage.binary_erosion(noisy.mask)
    grown = noisy.mask.sum() > exact.sum()
    return ndimage.distance_transform_edt(~exact if grown else exact)[outline]


def test_mask_jitter_makes_the_outline_irregular_and_keeps_every_other_draw(tmp_path):
    """--mask-jitter: the erosion or dilation varies along the outline (a real mask's errors), the same scene
    otherwise; without it the outline is a uniform disk offset, to the pixel."""
    poser = fit_recovery.BodyPoser(str(tmp_path))
    objects = fit_recovery.make_objects()
    for k, obj in enumerate(objects):
        clean = fit_recovery.make_scene(obj, poser, np.random.default_rng(k), at_hand=True)
        disk = fit_recovery.add_noise(clean, poser, np.random.default_rng(1))
        jittered = fit_recovery.add_noise(clean, poser, np.random.default_rng(1), jitter_px=1.5,
                                          jitter_rng=np.random.default_rng(5))
        assert np.array_equal(jittered.rotation, disk.rotation)
        assert np.array_equal(jittered.object_contact, disk.object_contact)
        assert np.array_equal(jittered.human_contact, disk.human_contact)
        uniform, irregular = _outline_offsets(disk), _outline_offsets(jittered)
        assert uniform.std() < 0.5 < 1.0 < irregular.std(), (obj.name, uniform.std(), irregular.std())
        assert abs(np.median(irregular) - np.median(uniform)) < 2.0  # about the same erosion / dilation
        # one piece, nothing added away from the object: the offset moves the outline, nothing else
        exact = fit_recovery.visible_mask(jittered)
        if jittered.mask.sum() < exact.sum():
            assert not (jittered.mask & ~exact).any()
        else:
            assert not (exact & ~jittered.mask).any()


def test_the_bench_says_which_mask_outline_it_draws(tmp_path, capsys):
    cfg = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    cfg.update(iterations=4, warmup_iterations=2, start_candidates_without_pose=2, finalists=1, exact_polish_rounds=1)
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    fit_recovery.main(["--scenes", "1", "--config", str(path), "--mask-jitter", "1"])
    out = capsys.readouterr().out
    assert "mask outline jittered 1 px" in out.splitlines()[0]
    assert out.strip().splitlines()[-1].startswith("success=")
    with pytest.raises(SystemExit):
        fit_recovery.main(["--scenes", "1", "--mask-jitter", "-1"])


def test_noisy_view_hides_about_the_asked_fraction_and_keeps_the_truth_consistent(tmp_path):
    """occluded_view turns body + object together (contacts stay true) so the body covers about the target
    share of the object, at most 40 %; the scene's mask and occlusion are what a render of its pose shows."""
    poser = fit_recovery.BodyPoser(str(tmp_path))
    rng = np.random.default_rng(3)
    box = fit_recovery.make_objects()[0]
    scene = fit_recovery.make_scene(box, poser, rng, at_hand=True)
    turned = fit_recovery.occluded_view(scene, rng, 0.3)
    assert 0.15 <= turned.occluded <= fit_recovery.MAX_OCCLUDED
    posed = np.asarray(box.mesh.vertices) @ turned.rotation.T + turned.translation
    faces = np.asarray(box.mesh.faces)
    both = render_depth([(turned.body_vertices, turned.body_faces), (posed, faces)], fit_recovery.CAMERA_K,
                        fit_recovery.IMAGE_HW)
    alone = render_depth([(posed, faces)], fit_recovery.CAMERA_K, fit_recovery.IMAGE_HW).mask
    assert np.array_equal(both.mesh_index == 1, turned.mask)
    assert 1.0 - turned.mask.sum() / alone.sum() == pytest.approx(turned.occluded)
    # a rigid turn of the whole scene: body-to-object distances (hence the contact labels) are unchanged
    before = np.asarray(box.mesh.vertices) @ scene.rotation.T + scene.translation
    assert np.allclose(np.linalg.norm(before - scene.body_vertices[scene.anchor], axis=1),
                       np.linalg.norm(posed - turned.body_vertices[turned.anchor], axis=1))
    assert turned.object_contact is scene.object_contact and turned.human_contact is scene.human_contact


def test_a_streams_next_frame_keeps_the_view_and_pose_and_draws_fresh_noise(tmp_path):
    poser = fit_recovery.BodyPoser(str(tmp_path))
    clean = fit_recovery.make_scene(fit_recovery.make_objects()[1], poser, np.random.default_rng(0), at_hand=True)
    noisy = fit_recovery.add_noise(clean, poser, np.random.default_rng(1))
    after = fit_recovery.next_frame(clean, noisy, poser, np.random.default_rng(2), 1.0)
    np.testing.assert_array_equal(after.body_vertices, noisy.body_vertices)
    np.testing.assert_array_equal(after.rotation, noisy.rotation)
    assert after.occluded == noisy.occluded
    assert not np.array_equal(after.mask, noisy.mask) and not np.array_equal(after.human_contact, noisy.human_contact)
    # the mask is the same view's, re-noised: it still overlaps the noisy frame's mostly
    assert (after.mask & noisy.mask).sum() > 0.3 * min(after.mask.sum(), noisy.mask.sum())


def test_restricted_noise_keeps_the_scene_and_puts_back_the_true_labels_or_mask(tmp_path):
    """--noise-parts compares the same scenes: restrict_noise keeps the noisy view and takes back the noise kinds
    not asked for (the true labels; the exact visible mask of that view)."""
    poser = fit_recovery.BodyPoser(str(tmp_path))
    box = fit_recovery.make_objects()[0]
    clean = fit_recovery.make_scene(box, poser, np.random.default_rng(0), at_hand=True)
    noisy = fit_recovery.add_noise(clean, poser, np.random.default_rng(1))
    view = fit_recovery.restrict_noise(clean, noisy, ())
    contacts = fit_recovery.restrict_noise(clean, noisy, ("contacts",))
    mask = fit_recovery.restrict_noise(clean, noisy, ("mask",))
    for scene in (view, contacts, mask):
        assert np.array_equal(scene.rotation, noisy.rotation)
        assert np.array_equal(scene.body_vertices, noisy.body_vertices)
    assert view.object_contact is clean.object_contact and contacts.object_contact is noisy.object_contact
    assert mask.human_contact is clean.human_contact and np.array_equal(mask.mask, noisy.mask)
    posed = np.asarray(box.mesh.vertices) @ noisy.rotation.T + noisy.translation
    exact = render_depth([(noisy.body_vertices, noisy.body_faces), (posed, np.asarray(box.mesh.faces))],
                         fit_recovery.CAMERA_K, fit_recovery.IMAGE_HW).mesh_index == 1
    assert np.array_equal(view.mask, exact) and np.array_equal(contacts.mask, exact)
    assert not np.array_equal(noisy.mask, exact)  # the mask noise is really taken back


def test_diagnose_tells_a_search_limited_miss_from_an_objective_limited_one(tmp_path):
    """A miss near whose true pose the refit stays, at a lower loss, is search-limited; with a mask of another
    pose the observations themselves favour a wrong pose, and the refit leaves the truth: objective-limited."""
    cfg = fit_recovery.FitConfig.load(None)
    poser = fit_recovery.BodyPoser(str(tmp_path))
    box = fit_recovery.make_objects()[0]
    scene = fit_recovery.make_scene(box, poser, np.random.default_rng(2), at_hand=True)
    limit, exact, line = fit_recovery.diagnose_miss(scene, cfg, None)  # a miss that placed nothing: inf loss
    assert limit == "search" and "search-limited" in line and not exact
    # the mask drawn 12 cm to the side: the fit from the true pose follows the mask away from the truth
    moved = fit_recovery.Scene(scene.obj, scene.body_vertices, scene.body_faces, scene.rotation, scene.translation,
                               scene.object_contact, scene.human_contact, np.roll(scene.mask, 36, axis=1),
                               scene.occluded, scene.anchor)
    limit, exact, line = fit_recovery.diagnose_miss(moved, cfg, None)
    assert limit == "objective" and "objective-limited" in line and not exact


def test_the_diagnosis_refits_from_a_fixed_small_step_off_the_truth():
    """Off the exact total's needle at the true pose, inside its basin: 2 degrees and 3 mm."""
    from ivlm_core.fitting.rotation import rotation_angle_deg

    rot = np.eye(3)
    centre = np.array([0.01, 0.02, 0.0])
    near_rot, near_trans = fit_recovery.perturb(rot, np.zeros(3), centre, np.random.default_rng(0),
                                                fit_recovery.NEAR_TURN_DEG, fit_recovery.NEAR_MOVE_M)
    assert rotation_angle_deg(near_rot, rot) == pytest.approx(2.0, abs=1e-6)
    assert np.linalg.norm(near_rot @ centre + near_trans - centre) == pytest.approx(0.003, abs=1e-9)


def test_diagnose_judges_an_objective_limited_miss_by_where_the_refit_from_the_truth_ends(tmp_path):
    """An objective-limited miss is a polish-search miss only when the refit from near the true pose ends near
    it (here it does) at a lower exact total than the miss; the true pose's own exact total (a pixel-exact needle)
    is printed, not decisive."""
    from types import SimpleNamespace

    cfg = fit_recovery.FitConfig.load(None)
    poser = fit_recovery.BodyPoser(str(tmp_path))
    box = fit_recovery.make_objects()[0]
    scene = fit_recovery.make_scene(box, poser, np.random.default_rng(2), at_hand=True)

    def miss(exact: float) -> SimpleNamespace:  # a lower loss than any refit: objective-limited by construction
        return SimpleNamespace(report={"loss_total": -1e9, "exact_total": exact})

    limit, reached, line = fit_recovery.diagnose_miss(scene, cfg, miss(1e9))
    assert limit == "objective" and reached and line.endswith("-> polish search")
    at_truth, refit = (float(v) for v in re.findall(r"exact total: ([\d.]+) at the true pose, ([\d.]+) where", line)[0])
    limit, reached, line = fit_recovery.diagnose_miss(scene, cfg, miss(-1e9))
    assert limit == "objective" and not reached and line.endswith("-> evidence")
    if at_truth < refit:  # between the two: only the needle beats the miss
        limit, reached, line = fit_recovery.diagnose_miss(scene, cfg, miss(0.5 * (at_truth + refit)))
        assert not reached and "only the pixel-exact true pose beats the miss" in line


def test_the_diagnosed_summary_says_what_a_perfect_search_would_place():
    """The successes plus the misses a search could have avoided (search-limited, or objective-limited where the
    refit from near the truth ends at a lower exact total); the evidence's misses are not counted."""
    hit = fit_recovery.FitOutcome(1.0, 0.1, 1.0)
    outcomes = [hit, hit, hit,
                fit_recovery.FitOutcome(9.0, 0.5, 1.0, limit="search"),
                fit_recovery.FitOutcome(7.0, 0.5, 1.0, limit="objective", polish_search=True),
                fit_recovery.FitOutcome(12.0, 0.5, 1.0, limit="objective"),
                fit_recovery.FitOutcome(float("inf"), float("inf"), 1.0, failure="refused", limit="objective"),
                fit_recovery.FitOutcome(8.0, 3.0, 1.0, limit="objective")]
    line = fit_recovery._summary("noisy", outcomes).splitlines()[0]
    assert "4 objective-limited (1 of them polish search" in line and ", 1 search-limited" in line
    assert line.endswith("a perfect search would place at most 5 of 8 (62.5%)")
    assert "perfect search" not in fit_recovery._summary("clean", [hit, hit])


def test_exact_total_prefers_the_true_pose_under_a_dilated_mask(tmp_path):
    """The fit's total with its mask term computed exactly: at the true pose, with the mask grown by 5 px (the
    shift pays its cost, nothing else), it beats the same pose turned by 12 degrees."""
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    cfg = fit_recovery.FitConfig.load(None)
    poser = fit_recovery.BodyPoser(str(tmp_path))
    box = fit_recovery.make_objects()[0]
    scene = fit_recovery.make_scene(box, poser, np.random.default_rng(2), at_hand=True)
    disk = np.hypot(*np.mgrid[-5:6, -5:6]) <= 5
    grown = fit_recovery.Scene(scene.obj, scene.body_vertices, scene.body_faces, scene.rotation, scene.translation,
                               scene.object_contact, scene.human_contact, ndimage.binary_dilation(scene.mask, disk),
                               scene.occluded, scene.anchor)
    centre = np.asarray(box.mesh.vertices).mean(0)
    turn = Rotation.from_rotvec([0.0, 0.0, np.radians(12)]).as_matrix()
    turned = (turn @ scene.rotation, scene.rotation @ centre + scene.translation - turn @ scene.rotation @ centre)
    at_truth = fit_recovery.exact_total(grown, cfg, (scene.rotation, scene.translation))
    assert np.isfinite(at_truth)
    assert at_truth < fit_recovery.exact_total(grown, cfg, turned)


def test_successes_are_split_by_the_visible_half_width():
    def outcome(width: float, success: bool) -> fit_recovery.FitOutcome:
        return fit_recovery.FitOutcome(1.0 if success else 30.0, 0.5, 1.0, half_width_px=width)

    outcomes = [outcome(5.0, True), outcome(9.0, False), outcome(8.0, True), outcome(20.0, True), outcome(30.0, False)]
    assert fit_recovery._successes_by_width(outcomes) == "0-8: 1/1, 8-12: 1/2, 12-16: 0/0, >=16: 1/2"


def test_visible_half_width_is_the_thickest_visible_part(tmp_path):
    objects = fit_recovery.make_objects()
    poser = fit_recovery.BodyPoser(str(tmp_path))
    scene = fit_recovery.make_scene(objects[0], poser, np.random.default_rng(3), at_hand=True)
    visible = fit_recovery.visible_mask(scene)
    width = fit_recovery.visible_half_width(scene)
    rows, cols = np.nonzero(visible)
    # a disc of that radius fits inside the visible object, which is at least that wide both ways
    assert 1.0 <= width <= min(np.ptp(rows), np.ptp(cols)) / 2 + 1
    assert width ** 2 * np.pi <= visible.sum() * 1.1


def test_a_moved_view_moves_body_and_object_together_by_the_returned_motion(tmp_path):
    """--stream-move: the person and the held object move rigidly together (contacts stay true); the mask and the
    occlusion are the new view's render, and the returned motion maps the old scene onto the new one."""
    poser = fit_recovery.BodyPoser(str(tmp_path))
    box = fit_recovery.make_objects()[0]
    scene = fit_recovery.make_scene(box, poser, np.random.default_rng(0), at_hand=True)
    moved, turn, shift = fit_recovery.moved_view(scene, np.random.default_rng(1), 10.0, 0.05)
    assert np.degrees(np.arccos(np.clip((np.trace(turn) - 1) / 2, -1, 1))) == pytest.approx(7.5, abs=2.6)
    np.testing.assert_allclose(moved.body_vertices, scene.body_vertices @ turn.T + shift, atol=1e-9)
    np.testing.assert_allclose(moved.rotation, turn @ scene.rotation, atol=1e-12)
    np.testing.assert_allclose(moved.translation, turn @ scene.translation + shift, atol=1e-9)
    touched = scene.body_vertices[scene.anchor]
    assert 0.025 - 1e-9 <= np.linalg.norm(moved.body_vertices[scene.anchor] - touched) <= 0.05 + 1e-9
    np.testing.assert_array_equal(moved.mask, fit_recovery.visible_mask(moved))
    assert moved.object_contact is scene.object_contact and moved.human_contact is scene.human_contact
    # nothing asked, nothing moved
    same, turn0, shift0 = fit_recovery.moved_view(scene, np.random.default_rng(1), 0.0, 0.0)
    np.testing.assert_allclose(turn0, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(shift0, np.zeros(3), atol=1e-12)
    np.testing.assert_allclose(same.body_vertices, scene.body_vertices, atol=1e-12)


def test_a_longer_moving_stream_pools_every_earlier_frame_through_the_hands_motion(tmp_path, capsys):
    """--stream-frames 3 --stream-move: each chain refits the frame between, and the last pooled fit maps both
    earlier frames by the hand's rigid motion (none skipped) when the config pools two."""
    cfg = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    cfg.update(iterations=30, warmup_iterations=8, start_candidates_without_pose=6, finalists=2, pool_frames=2)
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    fit_recovery.main(["--scenes", "1", "--config", str(path), "--stream", "--stream-frames", "3",
                       "--stream-move", "10", "0.05"])
    out = capsys.readouterr().out.strip().splitlines()
    assert sum(line.startswith("scene 00 stream@1 ") for line in out) == 1
    assert sum(line.startswith("scene 00 pooled@1 ") for line in out) == 1
    pooled = [line for line in out if line.startswith("scene 00 pooled ")]
    assert len(pooled) == 1 and " pooled=2" in pooled[0], pooled
    for bad in (["--stream-frames", "1"], ["--stream-move", "-1", "0"], ["--stream-move", "5", "nan"]):
        with pytest.raises(SystemExit):
            fit_recovery.main(["--scenes", "1", *bad])
