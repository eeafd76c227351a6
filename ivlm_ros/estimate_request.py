"""The one-shot service's request as pipeline arguments: conversion and checks only, no scheduling.

Everything a caller can get wrong (query, task, image encoding and size, box, mask size, the external body's
frame) is refused here with an InvalidInputError that names the field, before the request waits for the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ivlm_msgs.srv import EstimateInteraction

from ivlm_core.errors import InvalidInputError
from ivlm_core.user_text import validate_query
from ivlm_ros.image_conversion import image_msg_to_rgb, mask_msg_to_bool, raw_camera_k
from ivlm_ros.messages import smplx_params_from_msg
from ivlm_ros.parameters import NodeSettings, validate_parameter


@dataclass
class EstimateArguments:
    """What `InteractionPipeline.estimate` needs for one service request."""

    rgb: np.ndarray
    query: str
    task: str
    camera_k: np.ndarray | None
    object_box: tuple[float, float, float, float] | None
    object_mask: np.ndarray | None
    external_body: dict[str, Any] | None


def estimate_arguments(request: EstimateInteraction.Request, settings: NodeSettings) -> EstimateArguments:
    """Convert and check a request; empty query/task fall back to the node's parameters."""
    query = validate_query(request.object_query.strip() or settings.object_query)  # as the topic and parameter
    task = request.task or settings.task
    problem = validate_parameter("task", task)
    if problem:
        raise InvalidInputError(problem)
    rgb = image_msg_to_rgb(request.image, settings.max_image_pixels)
    # The pipeline validates K: an unusable one gives contacts without placement ("invalid camera_info").
    camera_k = raw_camera_k(request.camera_info if request.camera_info.width > 0 else None)
    roi = request.object_box
    box = None
    if roi.width > 0 and roi.height > 0:
        box = (float(roi.x_offset), float(roi.y_offset), float(roi.x_offset + roi.width),
               float(roi.y_offset + roi.height))
    mask = None
    if request.object_mask.width > 0:
        mask = mask_msg_to_bool(request.object_mask)
        if mask.shape != rgb.shape[:2]:
            raise InvalidInputError(
                f"object_mask is {mask.shape[1]}x{mask.shape[0]} but the image is {rgb.shape[1]}x{rgb.shape[0]}"
            )
    external_body = None
    if request.use_body_params:
        frame = request.body_params.header.frame_id
        if frame and frame != request.image.header.frame_id:
            raise InvalidInputError(
                f"body_params are in frame '{frame}' but the image is in '{request.image.header.frame_id}'; "
                "give the body in the camera frame"
            )
        external_body = smplx_params_from_msg(request.body_params)
    return EstimateArguments(rgb, query, task, camera_k, box, mask, external_body)
