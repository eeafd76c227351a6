"""The node's parameters: names, defaults, descriptions and validation, usable without ROS.

The node declares every entry of :data:`PARAMETERS` and validates changes with :func:`validate_parameter` in
its on-set-parameters callback, so a bad value is refused with a reason instead of failing later in a worker.
Parameters marked ``live=False`` are read on configure (weights, topics) and may only change while the node
is unconfigured.
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ivlm_core.errors import InvalidInputError
from ivlm_core.pipeline_config import (
    DECODER_COMPILE,
    DECODER_GEMV,
    DEFAULT_DRAFT_TOKENS,
    DEVICES,
    DTYPES,
    HUMAN_TEMPLATES,
    MAX_NEW_TOKENS_LIMIT,
    QUANTIZATIONS,
    REFERENCE_MAX_NEW_TOKENS,
    TASKS,
    PipelineConfig,
)
from ivlm_core.user_text import query_problem
from ivlm_ros.markers import COLORMAPS

_TOPIC_TOKEN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Check = Callable[[Any], "str | None"]


def _path(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be a string path, got {type(value).__name__}"
    if any(unicodedata.category(char) == "Cc" for char in value):
        return f"must be a single-line path without control characters, got {value!r}"
    return None


def _choice(options: tuple[str, ...]) -> Check:
    def check(value: Any) -> str | None:
        if value not in options:
            return f"must be one of {', '.join(options)}; got {value!r}"
        return None

    return check


def _number(
    lo: float, hi: float, lo_open: bool = False, integer: bool = False, hi_open: bool = False
) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {type(value).__name__}"
        if integer and not float(value).is_integer():
            return f"must be an integer, got {value}"
        if not math.isfinite(value):
            return f"must be finite, got {value}"
        if value < lo or (lo_open and value == lo) or value > hi or (hi_open and value == hi):
            left, right = "(" if lo_open else "[", ")" if hi_open else "]"
            return f"must be in {left}{lo}, {hi}{right}; got {value}"
        return None

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


def _topic(value: Any) -> str | None:
    """ROS 2 topic name rules (relative, absolute or private ~/), checked without rclpy."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty topic name"
    name = value
    if name.startswith("~/"):
        name = name[2:]
    elif name.startswith("/"):
        name = name[1:]
    if not name:
        return f"{value!r} has no name after the prefix"
    bad = [token for token in name.split("/") if not _TOPIC_TOKEN_RE.match(token)]
    if bad:
        return (
            f"{value!r} is not a valid topic name: each part must start with a letter or '_' and hold only "
            f"letters, digits and '_' (bad part: {bad[0]!r})"
        )
    return None


def parse_box(value: str) -> tuple[float, float, float, float] | None:
    """'x0,y0,x1,y1' in pixels -> a box; '' -> None. InvalidInputError says what is wrong."""
    if not value.strip():
        return None
    try:
        box = tuple(float(part) for part in value.split(","))
    except ValueError as err:
        raise InvalidInputError(f"object box must be 'x0,y0,x1,y1' in pixels, got {value!r}") from err
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
        raise InvalidInputError(f"object box must be 'x0,y0,x1,y1' with x1 > x0 and y1 > y0, got {value!r}")
    return box  # type: ignore[return-value]


def _box(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be a string 'x0,y0,x1,y1' (or ''), got {type(value).__name__}"
    try:
        parse_box(value)
    except InvalidInputError as err:
        return str(err)
    return None


_FRAME_PREFIX_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_/]*$")


def _frame_prefix(value: Any) -> str | None:
    """A TF frame-id prefix: tf2 frame ids have no leading '/' and no spaces."""
    if not isinstance(value, str) or not _FRAME_PREFIX_RE.match(value):
        return f"must be a TF frame prefix (a letter or '_', then letters, digits, '_' or '/'), got {value!r}"
    return None


def _query(value: Any) -> str | None:
    return query_problem(value)  # the one validator of the topic, this parameter, the service and the CLI


_PROBABILITY = _number(0.0, 1.0, lo_open=True, hi_open=True)


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    check: Check
    live: bool  # may change while the node is configured/active

    @property
    def kind(self) -> type:
        """The parameter's value type (bool, int, float or str), from its default."""
        return type(self.default)

    @property
    def numeric(self) -> bool:
        return self.kind in (int, float)


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "checkpoint_dir", "", "released InteractVLM folder (config.json, weights, tokenizer)", _path, False
    ),
    ParamSpec(
        "clip_dir",
        "",
        "local openai/clip-vit-large-patch14 folder ('' = from the checkpoint config)",
        _path,
        False,
    ),
    ParamSpec(
        "contact_2d_checkpoint_dir",
        "",
        "optional interactvlm-2d-hcontact folder: contact mask on the photo ('' = off)",
        _path,
        False,
    ),
    ParamSpec(
        "body_model_dir", "", "folder holding smplx/SMPLX_NEUTRAL.npz (and smplh/ for SMPL-H)", _path, False
    ),
    ParamSpec(
        "smpl_to_smplx", "", "smpl_to_smplx.pkl transfer matrix ('' = report SMPL-H contacts)", _path, False
    ),
    ParamSpec(
        "object_library", "", "YAML: object label -> mesh file + metric scale (object tasks)", _path, False
    ),
    ParamSpec(
        "fit_config", "", "YAML of object-fit weights/iterations ('' = config/fitting.yaml defaults)", _path, False
    ),
    ParamSpec(
        "reference_data_dir",
        "",
        "reference data/ folder (renders + lifting maps); '' = searched next to smpl_to_smplx and in "
        "body_model_dir, else ivlm renders the body",
        _path,
        False,
    ),
    ParamSpec("device", "auto", "torch device: auto, cpu or cuda", _choice(DEVICES), False),
    ParamSpec("dtype", "auto", "model dtype: auto, float32, bfloat16, float16", _choice(DTYPES), False),
    ParamSpec(
        "quantization", "none", "LLM weights: none (bf16/fp32), int8 or int4 (torchao, int4 CUDA only)",
        _choice(QUANTIZATIONS), False,
    ),
    ParamSpec(
        "decoder_compile", "auto",
        "compile the LLM decoder's layer glue with torch.compile: auto (on CUDA), on or off (~20 s more warm-up)",
        _choice(DECODER_COMPILE), False,
    ),
    ParamSpec(
        "decoder_gemv", "auto",
        "Triton matrix-vector kernels for the LLM's decode steps: auto (on CUDA, used only when the captured "
        "step agrees with cuBLAS's and is faster), on or off",
        _choice(DECODER_GEMV), False,
    ),
    ParamSpec(
        "draft_tokens", DEFAULT_DRAFT_TOKENS,
        "draft-and-verify decoding: template tokens verified per LLM forward (same answers); 0 = off",
        _number(0, 32, integer=True), False,
    ),
    ParamSpec("task", "human_contact", "human_contact, object_contact or interaction", _choice(TASKS), True),
    ParamSpec(
        "question_template",
        "auto",
        "human question type: auto (the checkpoint's hC_question_type), parts or simple",
        _choice(HUMAN_TEMPLATES),
        False,
    ),
    ParamSpec(
        "max_new_tokens", REFERENCE_MAX_NEW_TOKENS,
        "answer length cap (decoding stops at the mask token; a cut answer is reported as truncated)",
        _number(1, MAX_NEW_TOKENS_LIMIT, integer=True), False,
    ),
    ParamSpec(
        "object_cam_distance", 0.0,
        "camera distance the encoder sees for object views (0 = per checkpoint: 2.0 affordance, 1.5 PICO)",
        _number(0.0, 100.0), False,
    ),
    ParamSpec(
        "generate", True, "let the LLM generate the answer (false: teacher-forced [SEG])", _boolean, False
    ),
    ParamSpec("human_threshold", 0.5, "body-vertex contact probability threshold", _PROBABILITY, True),
    ParamSpec("object_threshold", 0.5, "object-vertex contact probability threshold", _PROBABILITY, True),
    ParamSpec(
        "fit_human", False, "place the SMPL-X body in the camera frame (needs camera_info)", _boolean, False
    ),
    ParamSpec(
        "fit_object", False, "fit the object pose to the contacts (needs camera_info)", _boolean, False
    ),
    ParamSpec("object_query", "scene", "object to ask about; 'scene' = ground/scene contact", _query, True),
    ParamSpec(
        "object_box", "", "fixed object box 'x0,y0,x1,y1' (pixels) for fit_object when ~/object_box is silent",
        _box, True,
    ),
    ParamSpec("image_topic", "/camera/color/image_raw", "sensor_msgs/Image input", _topic, False),
    ParamSpec(
        "camera_info_topic", "/camera/color/camera_info", "sensor_msgs/CameraInfo input", _topic, False
    ),
    ParamSpec(
        "use_compressed", False, "subscribe to <image_topic>/compressed (CompressedImage)", _boolean, False
    ),
    ParamSpec("query_topic", "~/object_query", "std_msgs/String topic that sets object_query", _topic, False),
    ParamSpec("require_camera_info", False, "drop images without a matching CameraInfo", _boolean, True),
    ParamSpec(
        "sync_slop_s",
        0.02,
        "max stamp difference of a paired Image and CameraInfo",
        _number(0.0, 1.0, lo_open=True),
        True,
    ),
    ParamSpec(
        "camera_info_timeout_s", 0.2, "how long an image waits for its CameraInfo", _number(0.0, 5.0), True
    ),
    ParamSpec(
        "body_params_slop_s",
        0.02,
        "max stamp difference of an image and the external SMPL-X body (~/body_params) used for it",
        _number(0.0, 1.0),
        True,
    ),
    ParamSpec(
        "body_params_timeout_s",
        1.0,
        "external body parameters received longer ago than this are dropped (stale regressor output)",
        _number(0.0, 60.0, lo_open=True),
        True,
    ),
    ParamSpec(
        "body_params_wait_s",
        0.0,
        "how long a frame waits for its ~/body_params while they are flowing (a regressor lags the camera)",
        _number(0.0, 5.0),
        True,
    ),
    ParamSpec(
        "max_rate_hz",
        0.0,
        "run the contact model (VLM) on at most this many frames per second (0 = as fast as it can); bodies "
        "are tracked on every frame regardless",
        _number(0.0, 1000.0),
        True,
    ),
    ParamSpec(
        "max_people", 1,
        "people tracked and asked about per frame (1 = the full image goes to the VLM, as the reference "
        "demo; more = a crop per person)",
        _number(1, 16, integer=True), False,
    ),
    ParamSpec(
        "track_max_missing_s", 1.0, "a tracked person keeps their track id while unseen for up to this long",
        _number(0.0, 60.0), False,
    ),
    ParamSpec(
        "person_box_timeout_s", 1.0,
        "person boxes from ~/person_box older than this are no longer given to the tracker",
        _number(0.0, 60.0, lo_open=True), True,
    ),
    ParamSpec(
        "object_refit_motion_m", 0.05,
        "refit the object (fit_object) when the person's pelvis moved more than this since the last fit",
        _number(0.0, 10.0, lo_open=True), True,
    ),
    ParamSpec(
        "input_reliability",
        "best_effort",
        "QoS reliability of the image/camera_info subscriptions: best_effort (sensor data) or reliable",
        _choice(("best_effort", "reliable")),
        False,
    ),
    ParamSpec("queue_size", 5, "subscription queue depth", _number(1, 100, integer=True), False),
    ParamSpec(
        "max_image_pixels",
        16_000_000,
        "images with more pixels (width x height, read from the message or the PNG/JPEG header) are dropped "
        "before decoding, with the reason",
        _number(1, 1_000_000_000, integer=True),
        True,
    ),
    ParamSpec("publish_markers", True, "publish ~/markers (MarkerArray)", _boolean, True),
    ParamSpec("publish_debug_image", True, "publish ~/debug_image", _boolean, True),
    ParamSpec(
        "publish_tf", True, "broadcast TF frames of placed people (pelvis) and fitted objects on /tf", _boolean, True
    ),
    ParamSpec(
        "tf_body_frame_prefix", "body_", "TF frame of person <id>: <prefix><id> (REP-155)", _frame_prefix, True
    ),
    ParamSpec(
        "tf_object_frame_prefix", "object_", "TF frame of a fitted object: <prefix><label>", _frame_prefix, True
    ),
    ParamSpec("marker_colormap", "viridis", "colour map of contact probabilities", _choice(COLORMAPS), True),
    ParamSpec(
        "contact_sphere_radius_m",
        0.01,
        "radius of contact-point spheres (metres)",
        _number(0.0, 1.0, lo_open=True),
        True,
    ),
    ParamSpec(
        "display_distance_m",
        2.5,
        "distance in front of the camera of meshes that are not fitted",
        _number(0.0, 100.0, lo_open=True),
        True,
    ),
    ParamSpec("diagnostics_period_s", 1.0, "period of /diagnostics", _number(0.01, 60.0), False),
    ParamSpec(
        "autostart", True, "configure and activate on start (no lifecycle manager needed)", _boolean, False
    ),
)
PARAMETERS_BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}


@dataclass(frozen=True)
class NodeSettings:
    """Validated parameter values (field names = parameter names)."""

    checkpoint_dir: str
    clip_dir: str
    contact_2d_checkpoint_dir: str
    body_model_dir: str
    smpl_to_smplx: str
    object_library: str
    fit_config: str
    reference_data_dir: str
    device: str
    dtype: str
    quantization: str
    decoder_compile: str
    decoder_gemv: str
    draft_tokens: int
    task: str
    question_template: str
    max_new_tokens: int
    object_cam_distance: float
    generate: bool
    human_threshold: float
    object_threshold: float
    fit_human: bool
    fit_object: bool
    object_query: str
    object_box: str
    image_topic: str
    camera_info_topic: str
    use_compressed: bool
    query_topic: str
    require_camera_info: bool
    sync_slop_s: float
    camera_info_timeout_s: float
    body_params_slop_s: float
    body_params_timeout_s: float
    body_params_wait_s: float
    max_rate_hz: float
    max_people: int
    track_max_missing_s: float
    person_box_timeout_s: float
    object_refit_motion_m: float
    input_reliability: str
    queue_size: int
    max_image_pixels: int
    publish_markers: bool
    publish_debug_image: bool
    publish_tf: bool
    tf_body_frame_prefix: str
    tf_object_frame_prefix: str
    marker_colormap: str
    contact_sphere_radius_m: float
    display_distance_m: float
    diagnostics_period_s: float
    autostart: bool

    def replace(self, **changes: Any) -> NodeSettings:
        return dataclasses.replace(self, **changes)

    def pipeline_config_dict(self) -> dict[str, Any]:
        """Arguments of ``ivlm_core.pipeline.PipelineConfig.from_dict`` ('' paths become None)."""

        def opt(path: str) -> str | None:
            return path or None

        return {
            "checkpoint_dir": self.checkpoint_dir,
            "clip_dir": opt(self.clip_dir),
            "contact_2d_checkpoint_dir": opt(self.contact_2d_checkpoint_dir),
            "body_model_dir": opt(self.body_model_dir),
            "smpl_to_smplx": opt(self.smpl_to_smplx),
            "reference_data_dir": opt(self.reference_data_dir),
            "device": self.device,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "decoder_compile": self.decoder_compile,
            "decoder_gemv": self.decoder_gemv,
            "draft_tokens": self.draft_tokens,
            "task": self.task,
            "question_template": self.question_template,
            "max_new_tokens": self.max_new_tokens,
            "object_cam_distance": self.object_cam_distance or None,
            "generate": self.generate,
            "human_threshold": self.human_threshold,
            "object_threshold": self.object_threshold,
            "object_library": opt(self.object_library),
            "fit_object": self.fit_object,
            "fit_human": self.fit_human,
            "fit_config": opt(self.fit_config),
        }


def validate_parameter(name: str, value: Any) -> str | None:
    """Reason why ``value`` is not acceptable for parameter ``name``, or None when it is."""
    spec = PARAMETERS_BY_NAME.get(name)
    if spec is None:
        return f"unknown parameter '{name}'"
    reason = spec.check(value)
    return None if reason is None else f"parameter '{name}' {reason}"


def coerce_number(spec: ParamSpec, value: Any) -> Any:
    """A whole number given for a float parameter becomes a float, an integral float for an int one an int.

    YAML and ``-p`` type ``2`` as an integer and ``5.0`` as a double; ROS would refuse either for a parameter
    declared with the other type. Anything else is returned unchanged for :func:`validate_parameter` to judge.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if spec.kind is float and isinstance(value, int):
        return float(value)
    if spec.kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def settings_from_dict(values: Mapping[str, Any]) -> NodeSettings:
    """Defaults overridden by ``values``; raises InvalidInputError listing every bad or unknown entry."""
    problems = [f"unknown parameter '{name}'" for name in values if name not in PARAMETERS_BY_NAME]
    merged: dict[str, Any] = {}
    for spec in PARAMETERS:
        value = values.get(spec.name, spec.default)
        reason = validate_parameter(spec.name, value)
        if reason:
            problems.append(reason)
        merged[spec.name] = coerce_number(spec, value)
    if problems:
        raise InvalidInputError("invalid ivlm node parameters: " + "; ".join(problems))
    settings = NodeSettings(**merged)
    reason = pipeline_config_problem(settings)
    if reason:
        raise InvalidInputError(f"invalid ivlm node parameters: {reason}")
    return settings


def pipeline_config_problem(settings: NodeSettings) -> str | None:
    """Cross-parameter problems found by the pipeline's own validation (same reason text as the CLI)."""
    try:
        PipelineConfig.from_dict(settings.pipeline_config_dict())
    except InvalidInputError as exc:
        return str(exc)
    return None
