"""The Rerun recording: image, camera, contact-coloured meshes and contact points on the image-stamp timeline."""

from __future__ import annotations

import numpy as np
import pytest

from ivlm_core.pipeline import BodyPlacement, HumanContactEstimate, InteractionResult

rerun = pytest.importorskip("rerun", reason="optional extra: pip install -r requirements-viz.txt")


def _result(placed: bool) -> InteractionResult:
    rng = np.random.default_rng(0)
    canonical = rng.normal(size=(50, 3)).astype(np.float32)
    vertices = canonical + np.array([0.0, 0.0, 3.0], np.float32)
    faces = rng.integers(0, 50, (40, 3))
    contact = np.linspace(0, 1, 50, dtype=np.float32)
    human = HumanContactEstimate(True, "", [], np.zeros((4, 8, 8, 3), np.uint8), None, contact, "smplx")
    body = BodyPlacement(True, "ok", vertices, faces) if placed else BodyPlacement(False, "no K")
    return InteractionResult("scene", "human_contact", human, None, (canonical, faces), body, None)


def test_frames_are_logged_on_the_image_stamp_timeline(tmp_path) -> None:
    from ivlm_core.testing.rerun_readback import rrd_rows
    from ivlm_core.viz.rerun_log import RerunRecording, meshes_of_result

    image = np.zeros((48, 64, 3), np.uint8)
    k = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    stamps = [1_700_000_001_000_000_000, 1_700_000_002_500_000_000]
    with RerunRecording(tmp_path / "run.rrd") as recording:
        recording.log_result(stamps[0], image, k, _result(placed=True))
        recording.log_result(stamps[1], image, None, _result(placed=False))
    assert recording.frames == 2
    rows = rrd_rows(tmp_path / "run.rrd")
    assert [s for s, _ in rows["/world/camera/image"]] == stamps
    assert [s for s, _ in rows["/world/camera"]] == stamps[:1]  # pinhole (frustum) only with intrinsics
    (first_body, second_body) = rows["/world/body"]
    assert first_body[0] == stamps[0] and "Mesh3D:vertex_colors" in first_body[1]
    assert second_body[0] == stamps[1]  # the unplaced body is drawn in the display pose
    assert [s for s, _ in rows["/world/body/contacts"]] == stamps
    body, _ = meshes_of_result(_result(placed=False))
    assert body is not None and body.vertices[:, 2].mean() == pytest.approx(2.5)


def test_contact_colours_follow_the_probability() -> None:
    from ivlm_core.fitting.export import CONTACT_RGB, HUMAN_RGB, contact_colours

    colours = contact_colours(np.array([0.0, 1.0]), 2, HUMAN_RGB)
    assert tuple(colours[0]) == HUMAN_RGB and tuple(colours[1]) == CONTACT_RGB

