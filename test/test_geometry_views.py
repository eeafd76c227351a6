"""Camera view sets and the PyTorch3D look-at / projection / pixel convention, with hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ivlm_core.errors import InvalidInputError
from ivlm_core.geometry.views import (
    VIEW_SETS,
    CameraView,
    cam_params_tensor,
    camera_position,
    get_view_set,
    project_points,
    view_transform,
)

SQRT3 = math.sqrt(3.0)  # 1 / tan(30 deg), the NDC focal scale of the default 60 deg FoV camera


def test_human_view_set_order_and_normalised_params() -> None:
    views = get_view_set("4MV-Z_Vitru")
    assert [v.name for v in views] == ["topfront", "bottomfront", "topback", "bottomback"]
    expected = np.array(
        [
            [0.2, 0.125, 0.875, 0.5, 0.5],
            [0.2, 0.875, 0.875, 0.5, 0.65],
            [0.2, 0.125, 0.375, 0.5, 0.5],
            [0.2, 0.875, 0.375, 0.5, 0.65],
        ],
        dtype=np.float32,
    )
    params = cam_params_tensor(views)
    assert params.dtype == np.float32 and params.shape == (4, 5)
    np.testing.assert_allclose(params, expected, atol=1e-7)
    for alias in ("4MV-Z_Vitru_mv2", "4MV-Z_Vitru_FootGround", "4MV-Z_Vitru_wScene"):
        assert VIEW_SETS[alias] == views


def test_object_view_set_and_distance_override() -> None:
    views = get_view_set("4MV-Z_HM")
    assert [v.name for v in views] == ["frontleft", "frontright", "backleft", "backright"]
    assert VIEW_SETS["4MV-Z_HM_BM"] == views
    np.testing.assert_allclose(
        cam_params_tensor(views)[:, 1:3],
        [[0.125, 0.875], [0.125, 0.125], [330 / 360, 0.375], [330 / 360, 0.625]],
    )
    mesh_views = get_view_set("4MV-Z_HM", dist=1.5)
    assert all(v.dist == 1.5 for v in mesh_views)
    assert cam_params_tensor(mesh_views)[0, 0] == pytest.approx(0.15)
    assert views[0].dist == 2.0  # the override returns copies


def test_degenerate_cameras_are_rejected() -> None:
    with pytest.raises(InvalidInputError, match="up axis"):
        view_transform(CameraView("top", dist=2.0, elev=90.0, azim=0.0))
    with pytest.raises(InvalidInputError, match="distance"):
        view_transform(CameraView("nowhere", dist=0.0, elev=10.0, azim=0.0))


def test_unknown_view_set_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="4MV-Z_Vitru"):
        get_view_set("4MV-Z_Nope")
    with pytest.raises(InvalidInputError):
        get_view_set("4MV-Z_Vitru", dist=-1.0)


@pytest.mark.parametrize("view", [*get_view_set("4MV-Z_Vitru"), *get_view_set("4MV-Z_HM")])
def test_look_at_rotation_is_proper_and_centres_the_origin(view: CameraView) -> None:
    rot, trans = view_transform(view)
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    # The world origin sits on the optical axis at depth dist, shifted by the reference's T offsets.
    np.testing.assert_allclose(np.zeros(3) @ rot + trans, [view.x_off, view.y_off, view.dist], atol=1e-12)
    # The camera's x axis is horizontal (up x z), so world up projects straight up in the image.
    pix, _ = project_points(np.array([[0.0, 0.0, 0.0], [0.0, 0.1, 0.0]]), view, 101)
    assert pix[1, 0] == pytest.approx(pix[0, 0], abs=1e-9)
    assert pix[1, 1] < pix[0, 1]


def test_known_point_pixel_by_hand() -> None:
    # Camera at (0,0,2) looking at the origin: x_cam = -X, y_cam = Y, z_cam = 2 - Z (PyTorch3D look_at).
    view = CameraView("front", dist=2.0, elev=0.0, azim=0.0)
    rot, trans = view_transform(view)
    np.testing.assert_allclose(rot, [[-1, 0, 0], [0, 1, 0], [0, 0, -1]], atol=1e-12)
    np.testing.assert_allclose(trans, [0, 0, 2], atol=1e-12)
    pix, depth = project_points(np.array([[0.5, 0.25, 0.0]]), view, 100)
    x_ndc, y_ndc = SQRT3 * -0.5 / 2.0, SQRT3 * 0.25 / 2.0  # -0.4330127, 0.2165064
    col, row = ((1 - x_ndc) * 100 - 1) / 2, ((1 - y_ndc) * 100 - 1) / 2
    assert (col, row) == pytest.approx((71.1506351, 38.6746825))
    np.testing.assert_allclose(pix[0], [col, row], atol=1e-9)
    assert depth[0] == pytest.approx(2.0)
    # World +X lands right of the image centre (49.5) and +Y above it.
    assert pix[0, 0] > 49.5 and pix[0, 1] < 49.5


def test_y_offset_shifts_content_up_like_the_bottom_views() -> None:
    view = CameraView("shifted", dist=2.0, elev=0.0, azim=0.0, x_off=0.0, y_off=0.3)
    pix, _ = project_points(np.array([[0.5, 0.25, 0.0]]), view, 100)
    y_ndc = SQRT3 * (0.25 + 0.3) / 2.0
    assert pix[0, 1] == pytest.approx(((1 - y_ndc) * 100 - 1) / 2)  # 25.6843
    # The optical centre moves with the offset: it is where X_cam = 0.
    centre = camera_position(view)
    rot, trans = view_transform(view)
    np.testing.assert_allclose(centre @ rot + trans, 0.0, atol=1e-12)


def test_topfront_camera_position_by_hand() -> None:
    view = get_view_set("4MV-Z_Vitru")[0]  # elev 45, azim 315
    np.testing.assert_allclose(camera_position(view), [-1.0, math.sqrt(2.0), 1.0], atol=1e-12)
