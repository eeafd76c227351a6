"""The one-shot service's request conversion: every caller mistake is refused, naming the field."""

from __future__ import annotations

import numpy as np
import pytest
from ivlm_msgs.srv import EstimateInteraction

from ivlm_core.errors import InvalidInputError
from ivlm_ros.estimate_request import estimate_arguments
from ivlm_ros.parameters import settings_from_dict


def _request(width: int = 8, height: int = 6) -> EstimateInteraction.Request:
    request = EstimateInteraction.Request()
    request.image.width, request.image.height = width, height
    request.image.encoding, request.image.step = "rgb8", width * 3
    request.image.data = bytes(np.arange(width * height * 3, dtype=np.uint8))
    request.image.header.frame_id = "camera_optical"
    return request


def test_defaults_come_from_the_node_settings_and_fields_convert() -> None:
    request = _request()
    request.object_box.x_offset, request.object_box.y_offset = 1, 2
    request.object_box.width, request.object_box.height = 3, 4
    request.camera_info.width = 8
    request.camera_info.k = [500.0, 0.0, 4.0, 0.0, 500.0, 3.0, 0.0, 0.0, 1.0]
    args = estimate_arguments(request, settings_from_dict({"object_query": "mug"}))
    assert args.query == "mug" and args.task == settings_from_dict({}).task
    assert args.rgb.shape == (6, 8, 3) and args.object_box == (1.0, 2.0, 4.0, 6.0)
    assert args.camera_k is not None and args.camera_k[0, 0] == 500.0
    assert args.object_mask is None and args.external_body is None


def test_a_request_without_camera_info_has_no_k() -> None:
    assert estimate_arguments(_request(), settings_from_dict({})).camera_k is None


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda r: setattr(r, "object_query", "<image>"), "<image>"),
        (lambda r: setattr(r, "task", "dance"), "task"),
        (lambda r: setattr(r.image, "encoding", "32FC1"), "32FC1"),
    ],
)
def test_bad_fields_are_refused_with_the_reason(change, fragment: str) -> None:
    request = _request()
    change(request)
    with pytest.raises(InvalidInputError, match=fragment.replace("<", ".").replace(">", ".")):
        estimate_arguments(request, settings_from_dict({}))


def test_an_object_mask_of_another_size_is_refused() -> None:
    request = _request()
    request.object_mask.width, request.object_mask.height = 4, 4
    request.object_mask.encoding, request.object_mask.step = "mono8", 4
    request.object_mask.data = bytes(16)
    with pytest.raises(InvalidInputError, match="object_mask is 4x4 but the image is 8x6"):
        estimate_arguments(request, settings_from_dict({}))


def test_body_params_in_another_frame_are_refused() -> None:
    request = _request()
    request.use_body_params = True
    request.body_params.header.frame_id = "base_link"
    with pytest.raises(InvalidInputError, match="base_link"):
        estimate_arguments(request, settings_from_dict({}))
