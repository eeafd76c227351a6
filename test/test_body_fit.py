"""Keypoint body fit on the synthetic SMPL-X model: recovery of a known pose, warm start, smoothing, statuses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from ivlm_core.errors import InvalidInputError, MissingAssetError
from ivlm_core.fitting import keypoints as keypoints_module
from ivlm_core.fitting.body_fit import (
    BodyFitConfig,
    CameraBodyPlacer,
    KeypointBodyFitter,
    StreamBodyFitter,
    camera_ray_rotation,
    is_jump,
    load_body_layer,
    result_with_params,
    smooth_params,
    solve_translation,
)
from ivlm_core.fitting.keypoints import POSE_INDEX, HumanKeypoints
from ivlm_core.testing.synthetic_keypoints import model_points, project_keypoints

IMAGE_SIZE = (480, 640)
CAMERA_K = np.array([[600.0, 0.0, 330.0], [0.0, 600.0, 235.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def body_dir(tmp_path_factory: pytest.TempPathFactory):
    from ivlm_core.testing.synthetic_body import write_synthetic_smplx

    root = tmp_path_factory.mktemp("body_fit_models")
    write_synthetic_smplx(root)
    return root


@pytest.fixture(scope="module")
def layer(body_dir):
    return load_body_layer(body_dir)


def _true_params(seed: int = 0, transl=(0.15, 0.1, 3.2), yaw_deg: float = 25.0) -> dict[str, np.ndarray]:
    """A moderately posed body facing the camera (OpenCV frame: the body's up is -y)."""
    rng = np.random.default_rng(seed)
    pose = np.zeros((21, 3), dtype=np.float32)
    pose[15, 2], pose[16, 2] = -0.9, 0.9  # arms lowered
    pose[17, 1], pose[18, 1] = -0.8, 0.6  # elbows bent
    pose[3, 0], pose[4, 0] = 0.3, 0.5  # knees bent
    pose += rng.normal(scale=0.08, size=pose.shape).astype(np.float32)
    orient = Rotation.from_euler("y", yaw_deg, degrees=True) * Rotation.from_rotvec([np.pi, 0.0, 0.0])
    return {
        "global_orient": orient.as_rotvec().astype(np.float32),
        "body_pose": pose.reshape(63),
        "betas": np.zeros(10, dtype=np.float32),
        "transl": np.asarray(transl, dtype=np.float32),
    }


def _points(fitter: KeypointBodyFitter, params: dict[str, np.ndarray]) -> np.ndarray:
    return model_points(fitter, params)


def _synthetic_keypoints(fitter: KeypointBodyFitter, params: dict[str, np.ndarray]) -> HumanKeypoints:
    """What a perfect detector would report for this body: projected 2D and metric, ray-aligned 3D."""
    return project_keypoints(fitter, params, CAMERA_K, IMAGE_SIZE)


def _joint_error_m(fitter, params_a, params_b) -> float:
    return float(np.linalg.norm(_points(fitter, params_a)[:22] - _points(fitter, params_b)[:22], axis=1).mean())


def test_layer_matches_smplx_forward(body_dir, layer):
    """The joints + keypoint-vertex layer reproduces the smplx package's SMPL-X forward pass."""
    from ivlm_core.body.models import load_body_model, posed_mesh

    model = load_body_model(body_dir, "smplx")
    rng = np.random.default_rng(3)
    params = {name: rng.normal(scale=0.3, size=size).astype(np.float32) for name, size in (
        ("betas", 10), ("global_orient", 3), ("body_pose", 63), ("left_hand_pose", 45),
        ("right_hand_pose", 45), ("jaw_pose", 3), ("expression", 10), ("transl", 3))}  # fmt: skip
    with torch.no_grad():
        reference = posed_mesh(model, **params)
        ours = layer({k: torch.from_numpy(v)[None] for k, v in params.items()})
        subset = layer({k: torch.from_numpy(v)[None] for k, v in params.items()}, (5, 17, 40))
    np.testing.assert_allclose(ours.vertices[0].numpy(), reference.vertices[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(ours.joints[0].numpy(), reference.joints[0, :55].numpy(), atol=1e-5)
    np.testing.assert_allclose(subset.vertices[0].numpy(), reference.vertices[0, [5, 17, 40]].numpy(), atol=1e-5)
    assert len(layer.keypoint_vertex_ids) == 21  # the synthetic file's keypoint vertices were picked up


def test_fit_recovers_known_pose_from_synthetic_keypoints(layer):
    fitter = KeypointBodyFitter(layer, BodyFitConfig.fast())
    truth = _true_params()
    result = fitter.fit(_synthetic_keypoints(fitter, truth), CAMERA_K)
    assert result.placed, result.status
    assert result.reprojection_error_rel < 0.01, result.reprojection_error_px
    assert abs(result.params["transl"][2] - truth["transl"][2]) < 0.15  # depth from the nominal height
    assert _joint_error_m(fitter, result.params, truth) < 0.09  # metres, mean over the 22 body joints
    assert result.vertices.shape == (layer.num_vertices, 3) and result.faces.shape[1] == 3
    assert np.all(result.vertices[:, 2] > 0)  # in front of the camera
    turn = Rotation.from_rotvec(result.params["global_orient"]) * Rotation.from_rotvec(truth["global_orient"]).inv()
    assert np.degrees(turn.magnitude()) < 10.0
    assert set(result.placement_kwargs()) == {"placed", "status", "vertices", "faces", "params", "joints"}
    assert result.placement_kwargs()["joints"].shape == (55, 3)  # pelvis first: the TF body frame origin


def test_warm_start_tracks_the_next_frame_with_few_iterations(layer):
    config = BodyFitConfig.fast()
    fitter = KeypointBodyFitter(layer, config)
    first = _true_params(seed=1)
    cold = fitter.fit(_synthetic_keypoints(fitter, first), CAMERA_K)
    second = dict(first, transl=first["transl"] + np.array([0.05, 0.0, 0.05], dtype=np.float32))
    second["body_pose"] = first["body_pose"] + 0.05
    warm = fitter.fit(_synthetic_keypoints(fitter, second), CAMERA_K, init=cold.params)
    assert warm.warm_started and warm.iterations == config.iters_warm < cold.iterations
    assert warm.reprojection_error_rel < 0.01
    assert abs(warm.params["transl"][0] - second["transl"][0]) < 0.05


def test_smoothing_slerps_rotations_across_the_axis_angle_wrap():
    near_pi = np.array([np.pi - 0.05, 0.0, 0.0], dtype=np.float32)
    other_side = np.array([-(np.pi - 0.05), 0.0, 0.0], dtype=np.float32)  # 0.1 rad away, opposite vector
    previous = {"global_orient": near_pi, "transl": np.zeros(3, np.float32), "betas": np.zeros(10, np.float32)}
    current = {"global_orient": other_side, "transl": np.ones(3, np.float32), "betas": np.ones(10, np.float32)}
    smoothed = smooth_params(previous, current, alpha=0.5)
    angle = Rotation.from_rotvec(smoothed["global_orient"]).magnitude()
    assert angle > np.pi - 0.06  # a linear blend would give ~0 rad (the identity)
    np.testing.assert_allclose(smoothed["transl"], 0.5)
    np.testing.assert_allclose(smoothed["betas"], 0.5)
    config = BodyFitConfig()
    assert not is_jump(previous, dict(previous, transl=np.array([0.1, 0, 0], np.float32)), config)
    assert is_jump(previous, dict(previous, transl=np.array([1.0, 0, 0], np.float32)), config)
    assert is_jump(previous, dict(previous, global_orient=np.zeros(3, np.float32)), config)


def test_placer_stream_smooths_and_resets_on_jumps(layer):
    config = BodyFitConfig.fast()
    placer = CameraBodyPlacer(layer, config, stream=True)
    fitter = placer.fitter
    base = _true_params(seed=2)
    frames = [
        base,
        dict(base, transl=base["transl"] + np.float32(0.02)),
        dict(base, transl=base["transl"] + np.array([1.5, 0, 0], np.float32)),
    ]
    results = [placer.place(None, CAMERA_K, keypoints=_synthetic_keypoints(fitter, p)) for p in frames]
    assert [r.placed for r in results] == [True, True, True]
    assert [r.smoothed for r in results] == [False, True, False]  # the 1.5 m jump restarts smoothing
    assert results[1].warm_started
    assert abs(results[2].params["transl"][0] - frames[2]["transl"][0]) < 0.1


def test_stream_fitter_is_the_warm_fit_smoothed_and_its_jump_policy_is_a_setting(layer):
    """The one frame-to-frame fit CameraBodyPlacer and BodyTracker share, against its parts called by hand: a
    warm frame is the warm fit smoothed with the previous body; a body jump restarts the smoothing (placer) or
    is re-fitted cold (tracker)."""
    config = BodyFitConfig(iters_pose_init=30, iters_camera=25, iters_full=70, iters_warm=40, reset_translation_m=0.3)
    fitter = KeypointBodyFitter(layer, config)
    base = _true_params(seed=5)
    near = _synthetic_keypoints(fitter, dict(base, transl=base["transl"] + np.float32(0.02)))
    far = _synthetic_keypoints(fitter, dict(base, transl=base["transl"] + np.array([0.6, 0, 0], np.float32)))
    frames = StreamBodyFitter(fitter)
    first = frames.fit_frame(_synthetic_keypoints(fitter, base), CAMERA_K)
    assert first.result.placed and first.reinit_reason == "no previous body" and not first.result.smoothed

    warm = frames.fit_frame(near, CAMERA_K, first.result)
    by_hand = fitter.fit(near, CAMERA_K, init=first.result.params)
    expected = result_with_params(fitter, by_hand, smooth_params(first.result.params, by_hand.params, 0.6))
    assert warm.reinit_reason == "" and warm.result.smoothed and warm.result.warm_started
    for name, value in expected.params.items():
        np.testing.assert_allclose(warm.result.params[name], value, atol=1e-6)
    np.testing.assert_allclose(warm.result.vertices, expected.vertices, atol=1e-6)
    assert warm.result.reprojection_error_rel == pytest.approx(expected.reprojection_error_rel, abs=1e-7)

    restart = frames.fit_frame(far, CAMERA_K, warm.result)  # placer policy: the warm fit, unsmoothed
    assert restart.reinit_reason == "" and restart.result.warm_started and not restart.result.smoothed
    assert is_jump(warm.result.params, restart.result.params, config)
    refit = StreamBodyFitter(fitter, refit_on_jump=True).fit_frame(far, CAMERA_K, warm.result)  # tracker policy
    assert refit.reinit_reason == "body jump" and not refit.result.warm_started and not refit.result.smoothed
    assert refit.result.reprojection_error_rel < restart.result.reprojection_error_rel


def test_stream_fitter_drift_limit_follows_the_previous_error(layer):
    """drift_factor: a warm fit worse than refit_error is still kept when the previous frame was as bad."""
    config = dataclasses.replace(BodyFitConfig.fast(), refit_error=1e-5)
    fitter = KeypointBodyFitter(layer, config)
    keypoints = _synthetic_keypoints(fitter, _true_params(seed=6))
    first = StreamBodyFitter(fitter).fit_frame(keypoints, CAMERA_K).result
    assert first.reprojection_error_rel > config.refit_error
    absolute = StreamBodyFitter(fitter).fit_frame(keypoints, CAMERA_K, first)
    assert absolute.reinit_reason == "warm fit drifted"
    relative = StreamBodyFitter(fitter, drift_factor=1e6).fit_frame(keypoints, CAMERA_K, first)
    assert relative.reinit_reason == "" and relative.result.warm_started


def test_placer_never_keeps_a_diverged_fit(layer):
    """NaN keypoints give a stated not-placed result and leave the stream state alone (warm start next frame)."""
    placer = CameraBodyPlacer(layer, BodyFitConfig.fast(), stream=True)
    base = _true_params(seed=7)
    assert placer.place(None, CAMERA_K, keypoints=_synthetic_keypoints(placer.fitter, base)).placed
    broken = _synthetic_keypoints(placer.fitter, base)
    broken.pose_2d[:] = np.nan
    result = placer.place(None, CAMERA_K, keypoints=broken)
    assert not result.placed and "non-finite" in result.status
    after = placer.place(None, CAMERA_K, keypoints=_synthetic_keypoints(placer.fitter, base))
    assert after.placed and after.warm_started and np.all(np.isfinite(after.vertices))


def test_placer_without_body_model_says_why(tmp_path):
    unset = CameraBodyPlacer.from_body_model_dir(None)
    result = unset.place(np.zeros((8, 8, 3), np.uint8), CAMERA_K)
    assert not result.placed and "SMPL-X" in result.status and "canonical body" in result.status
    missing = CameraBodyPlacer.from_body_model_dir(tmp_path / "nowhere")
    assert not missing.available
    status = missing.place(np.zeros((8, 8, 3), np.uint8), CAMERA_K).status
    assert "nowhere" in status and "smpl-x.is.tue.mpg.de" in status
    from ivlm_core.fitting.external_body import place_from_params

    assert not place_from_params(missing, {"global_orient": np.zeros(3)}).placed


def test_missing_mediapipe_error_says_how_to_install(monkeypatch):
    real_import = keypoints_module.importlib.import_module

    def no_mediapipe(name, *args):
        if name == "mediapipe":
            raise ImportError("No module named 'mediapipe'")
        return real_import(name, *args)

    monkeypatch.setattr(keypoints_module.importlib, "import_module", no_mediapipe)
    with pytest.raises(MissingAssetError, match=r"mediapipe==0\.10\.14"):
        keypoints_module.require_mediapipe()
    assert not keypoints_module.mediapipe_available()


def test_too_few_keypoints_is_reported_not_raised(layer):
    fitter = KeypointBodyFitter(layer, BodyFitConfig.fast())
    keypoints = _synthetic_keypoints(fitter, _true_params())
    keypoints.pose_confidence[:] = 0.0
    keypoints.pose_confidence[POSE_INDEX["nose"]] = 1.0
    result = fitter.fit(keypoints, CAMERA_K)
    assert not result.placed and "keypoints" in result.status


def test_fit_rejects_an_unusable_k_like_the_pipeline_and_tracker(layer):
    """The fit uses the one K check (geometry.intrinsics): NaN entries or a wrong last row are named, not fitted."""
    fitter = KeypointBodyFitter(layer, BodyFitConfig.fast())
    keypoints = _synthetic_keypoints(fitter, _true_params())
    for bad, fragment in ((np.where(np.eye(3) == 1, np.nan, CAMERA_K), "NaN"), (CAMERA_K * 2, "last row"),
                          (np.eye(2), "3x3")):  # fmt: skip
        with pytest.raises(InvalidInputError, match=fragment):
            fitter.fit(keypoints, bad)


def test_translation_solve_and_ray_rotation_are_exact_on_clean_data():
    rng = np.random.default_rng(4)
    points = rng.normal(scale=0.4, size=(20, 3))
    shift = np.array([0.3, -0.2, 4.0])
    pixels = (points + shift)[:, :2] / (points + shift)[:, 2:3] * np.diag(CAMERA_K)[:2] + CAMERA_K[:2, 2]
    np.testing.assert_allclose(solve_translation(points, pixels, np.ones(20), CAMERA_K), shift, atol=1e-4)
    pixel = np.array([500.0, 100.0])
    ray = np.linalg.solve(CAMERA_K, [*pixel, 1.0])
    np.testing.assert_allclose(camera_ray_rotation(pixel, CAMERA_K) @ [0, 0, 1], ray / np.linalg.norm(ray), atol=1e-9)
    np.testing.assert_allclose(camera_ray_rotation(CAMERA_K[:2, 2], CAMERA_K), np.eye(3), atol=1e-9)


def test_overlay_paints_where_the_body_projects(layer):
    from ivlm_core.fitting.body_overlay import draw_mesh_overlay, draw_turned_view

    fitter = KeypointBodyFitter(layer)
    params = fitter._complete({k: torch.from_numpy(v)[None] for k, v in _true_params().items()})
    with torch.no_grad():
        vertices = layer(params).vertices[0].numpy()
    image = np.zeros((*IMAGE_SIZE, 3), dtype=np.uint8)
    overlay = draw_mesh_overlay(image, vertices, layer.faces, CAMERA_K)
    painted = overlay.any(axis=2)
    pixels = vertices[:, :2] / vertices[:, 2:3] * np.diag(CAMERA_K)[:2] + CAMERA_K[:2, 2]
    inside = painted[np.clip(pixels[:, 1].astype(int), 0, IMAGE_SIZE[0] - 1),
                     np.clip(pixels[:, 0].astype(int), 0, IMAGE_SIZE[1] - 1)]  # fmt: skip
    assert inside.mean() > 0.9
    box = np.ptp(pixels, axis=0)
    assert painted.sum() < 0.8 * box[0] * box[1]  # a body, not its bounding box
    turned = draw_turned_view(vertices, layer.faces, CAMERA_K, IMAGE_SIZE)
    assert (turned != 255).any(axis=2).mean() > 0.02


def test_config_from_mapping_validates_names_and_types():
    config = BodyFitConfig.from_dict({"iters_full": "40", "w_depth": 3})
    assert config.iters_full == 40 and isinstance(config.iters_full, int) and config.w_depth == 3.0
    with pytest.raises(InvalidInputError, match="unknown"):
        BodyFitConfig.from_dict({"iterations": 5})
    with pytest.raises(InvalidInputError, match="number"):
        BodyFitConfig.from_dict({"lr": "fast"})


def test_flat_adam_matches_torch_adam():
    """The fit's one-tensor Adam takes the same steps as torch.optim.Adam on the same parameters."""
    from ivlm_core.fitting.body_fit import FlatAdam

    target = torch.linspace(-2.0, 3.0, 7)
    ours = torch.zeros(7, requires_grad=True)
    theirs = torch.zeros(7, requires_grad=True)
    flat = FlatAdam(ours, lr=0.05)
    reference = torch.optim.Adam([theirs], lr=0.05)
    for _ in range(30):
        (gradient,) = torch.autograd.grad(((ours - target) ** 4).sum(), ours)
        flat.step(gradient)
        reference.zero_grad()
        ((theirs - target) ** 4).sum().backward()
        reference.step()
    torch.testing.assert_close(ours.detach(), theirs.detach(), atol=1e-6, rtol=1e-6)


def test_a_single_thread_section_leaves_other_threads_counts_alone() -> None:
    """The body loop fits in a single_torch_thread() section while the node's object fit and contact loops run
    torch in their own threads: with torch's OpenMP backend the count is per thread, so theirs stays."""
    import threading

    from ivlm_core.fitting.body_fit import single_torch_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    inside, release = threading.Event(), threading.Event()

    def body_loop() -> None:
        with single_torch_thread():
            assert torch.get_num_threads() == 1
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=body_loop)
    try:
        worker.start()
        assert inside.wait(10)
        assert torch.get_num_threads() == 2
    finally:
        release.set()
        worker.join(10)
        torch.set_num_threads(before)
