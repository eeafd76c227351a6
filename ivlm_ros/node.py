"""The ivlm lifecycle node: camera images in; contacts, meshes, markers, debug image and diagnostics out.

Thin by design: image conversion, scheduling and publishing live here; all model work goes through
``ivlm_core.pipeline.InteractionPipeline``. Weights load on *configure* and are released on *cleanup*. With
``autostart`` (default) the node configures and activates itself, so ``python -m ivlm_ros.node`` or
``ros2 run ivlm_ros ivlm_node`` works without a lifecycle manager. A failed configure (missing weights, body
model or CUDA) leaves the node up in the unconfigured state with an ERROR in /diagnostics and a log line that
says how to fix it; ``ros2 lifecycle set /ivlm configure`` retries after the fix.

Threads: callbacks only convert stamps and store the newest frame (:class:`LatestSlot`). Three worker threads
(not executor threads) do the work: the *body loop* tracks the people on the newest frame (warm-started SMPL-X
fit, ``ivlm_core.tracking.BodyTracker``), paints the latest contacts on them and publishes bodies, estimates,
markers and TF at camera rate; it hands each frame on to the *contact loop*, which runs the VLM on the newest
one at its own rate (``max_rate_hz``; the full image, or a crop per person with ``max_people`` > 1) and
updates each person's contact on the :class:`ContactBoard`; the *object fit* thread refits the object when a
contact arrives or the person moved (``object_refit_motion_m``), never on the body loop's path.
The image and CameraInfo subscriptions have callback groups of their own on a MultiThreadedExecutor, so
neither timers nor waiting service calls delay them. The one-shot service runs in a reentrant group: up to
:data:`SERVICE_QUEUE_DEPTH` requests wait (each in an executor thread) for the model lock; one more is
answered at once with ``success=false, "busy: N requests queued"``, so no request goes unanswered. External
SMPL-X bodies (``~/body_params``) are validated on arrival and kept in a :class:`StampedBuffer`; the body loop
uses the newest one within ``body_params_slop_s`` of the frame's stamp and in the frame's ``frame_id`` instead
of the keypoint body fit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from ivlm_msgs.msg import HumanContact, InteractionEstimate, ObjectContact, SmplxParams, TrackedBodies
from ivlm_msgs.srv import EstimateInteraction
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.exceptions import InvalidHandle
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from ivlm_core.errors import InvalidInputError, IvlmError
from ivlm_core.user_text import escape_for_log, escape_inline
from ivlm_ros.component_status import ComponentMonitor
from ivlm_ros.contact_board import (
    WHOLE_IMAGE,
    ContactBoard,
    PersonBody,
    PersonContact,
    PersonObject,
    moved_with_pelvis,
)
from ivlm_ros.debug_image import compose_debug_image
from ivlm_ros.deferred_teardown import DeferredTeardown
from ivlm_ros.diagnostics import (
    LoopMeter,
    NodeReport,
    RecentOutcomes,
    SequenceGapCounter,
    Stats,
    diagnostic_array,
    object_region,
)
from ivlm_ros.estimate_request import estimate_arguments
from ivlm_ros.image_conversion import (
    ImageTooLargeError,
    camera_matrix,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    mask_msg_to_bool,
    raw_camera_k,
    rgb_to_image_fields,
)
from ivlm_ros.latest_slot import LatestSlot
from ivlm_ros.marker_cdr import encode_marker_array
from ivlm_ros.markers import CornerColourCache, StaleMarkers, interaction_markers, person_namespace
from ivlm_ros.messages import (
    box_from_roi,
    human_contact_msg,
    interaction_estimate_cdr,
    interaction_estimate_msg,
    make_header,
    object_contact_msg,
    object_pose_stamped_msg,
    smplx_params_from_msg,
    tracked_bodies_msg,
)
from ivlm_ros.parameters import (
    PARAMETERS,
    PARAMETERS_BY_NAME,
    NodeSettings,
    coerce_number,
    parse_box,
    pipeline_config_problem,
    settings_from_dict,
    validate_parameter,
)
from ivlm_ros.stamp_sync import StampedBuffer, StampPairer
from ivlm_ros.tf_frames import TfBroadcaster, interaction_transforms

if TYPE_CHECKING:
    from ivlm_core.pipeline import ObjectPlacement

NODE_NAME = "ivlm"
_EXPIRY_PERIOD_S = 0.05
# One-shot service: requests waiting for the model (each holds an executor thread); one more gets "busy".
SERVICE_QUEUE_DEPTH = 4
# DDS history of the service's request reader: a burst of calls waits there until the executor takes each one
# (and answers it or queues it), instead of the default depth 10 overwriting the rest unanswered.
SERVICE_QOS_DEPTH = 100
# Executor threads: the waiting service calls + one to answer "busy" + images, CameraInfo, timers/topics.
EXECUTOR_THREADS = SERVICE_QUEUE_DEPTH + 4


@dataclass
class Frame:
    """One input frame waiting for the worker."""

    image: Image | CompressedImage
    info: CameraInfo | None
    received_s: float  # time.monotonic() at arrival
    settings: NodeSettings  # the settings (object query, task, ...) in force when the frame was released


@dataclass
class BodiesSnapshot:
    """What the body loop made of one frame: kept for the contact loop, the object fit and republishing."""

    header: Any  # the source image's std_msgs/Header
    rgb: np.ndarray
    camera_k: np.ndarray | None  # usable K (None: not placed)
    info: CameraInfo | None
    bodies: list[PersonBody]  # the people fitted on this frame
    status: str
    settings: NodeSettings
    coasting: list[PersonBody] = field(default_factory=list)  # tracks unseen on this frame, kept <= max_missing_s


@dataclass
class ContactJob:
    """A frame handed from the body loop to the contact loop (decoded once, with the people found on it)."""

    snapshot: BodiesSnapshot
    received_s: float  # time.monotonic() when the image arrived (contact latency is measured from here)


@dataclass
class FitJob:
    """One object fit: a person's body of one frame with the contacts to fit against."""

    snapshot: BodiesSnapshot
    body: PersonBody
    key: int
    contact: PersonContact
    object_mask: np.ndarray | None
    object_box: tuple[float, float, float, float] | None


def projected_box(placement: Any, camera_k: np.ndarray | None) -> tuple[float, float, float, float]:
    """Pixel box of a placed mesh through K (zeros when it cannot be projected)."""
    if camera_k is None or not placement.placed or placement.vertices is None or not len(placement.vertices):
        return (0.0, 0.0, 0.0, 0.0)
    points = np.asarray(placement.vertices, dtype=np.float64)
    points = points[points[:, 2] > 1e-6]
    if not len(points):
        return (0.0, 0.0, 0.0, 0.0)
    pixels = (points / points[:, 2:3]) @ np.asarray(camera_k, dtype=np.float64).T
    (x0, y0), (x1, y1) = pixels[:, :2].min(axis=0), pixels[:, :2].max(axis=0)
    return (float(x0), float(y0), float(x1), float(y1))


# A body-loop frame slower than this logs where its time went (throttled).
SLOW_BODY_FRAME_S = 0.5
# Niceness of the contact and object-fit threads: on a small CPU the camera-rate body loop must win.
BACKGROUND_NICE = 10


def lower_thread_priority(nice: int = BACKGROUND_NICE) -> None:
    """Lower the calling thread's CPU priority (Linux: niceness is per thread, and the threads it starts, such
    as torch's intra-op pool, inherit it). Elsewhere (where it would renice the whole process) nothing."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


# Python's GIL switch interval for the node process. The contact loop (the VLM) is Python-heavy and holds the
# GIL most of the time; the body loop's fit is many small torch ops, each needing the GIL back: at the default
# 5 ms per hand-over a ~40 ms warm fit took 0.5-3 s while a fast VLM ran. A shorter interval hands it over sooner.
GIL_SWITCH_INTERVAL_S = 0.0005


def _stamp_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def fix_hint(exc: BaseException) -> str:
    """The actionable part of a load failure (MissingAssetError already carries its how-to-fix)."""
    how = getattr(exc, "how_to_fix", None)
    if how:
        return str(how)
    if isinstance(exc, IvlmError):
        return "check the node parameters (ros2 param dump /ivlm) against config/ivlm.yaml"
    if isinstance(exc, ImportError):
        return "Python environment incomplete: run `bash scripts/setup_venv.sh` (pip) or rosdep install"
    return "unexpected error while loading (traceback above); check device/dtype and the checkpoint files"


class IvlmNode(LifecycleNode):
    """Lifecycle node; see the module docstring for the threading model."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._declare_parameters()
        self._state = "unconfigured"
        self._settings_error = ""
        try:
            self.settings = settings_from_dict({s.name: self.get_parameter(s.name).value for s in PARAMETERS})
        except InvalidInputError as exc:
            self._settings_error = str(exc)
            self.settings = settings_from_dict({})
            self.get_logger().error(f"{exc}; fix the parameters (config/ivlm.yaml) and configure again")
        # Latest object box / mask for fitting the object (cleared when the object query changes).
        self._object_box: tuple[float, float, float, float] | None = None
        self._object_mask: np.ndarray | None = None
        # External SMPL-X bodies (~/body_params), each with its parameter arrays; guarded by _sync_lock.
        self._body_params: StampedBuffer[tuple[SmplxParams, dict[str, np.ndarray]]] = StampedBuffer(30)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.stats = Stats()
        self._outcomes = RecentOutcomes()
        self._image_gaps = SequenceGapCounter()
        self._dds_lost_events = 0  # QoS "message lost" events on the image subscription (where the RMW has them)
        self._warned_empty_frame_id = False
        self._service_lock = threading.Lock()
        self._service_waiting = 0
        self.monitor = ComponentMonitor()  # rates and fit counters of the input / body tracker / object fit statuses
        self._tf: TfBroadcaster | None = None
        self._pipeline: Any = None
        self._load_error = ""
        self._model_lock = threading.Lock()
        # Three loops (see the module docstring): bodies at camera rate, contacts at the VLM's, object fits.
        self._body_slot: LatestSlot[Frame] = LatestSlot()
        self._contact_slot: LatestSlot[ContactJob] = LatestSlot()
        self._fit_slot: LatestSlot[FitJob] = LatestSlot()
        self._workers: list[threading.Thread] = []
        self._tracker: Any = None
        self._max_people = 1
        self._board = ContactBoard()
        self._last_bodies: BodiesSnapshot | None = None
        self._track_seen: dict[int, float] = {}
        self._stale_markers = StaleMarkers()
        self._corner_colours = CornerColourCache()
        self._person_boxes: list[tuple[float, tuple[float, float, float, float]]] = []  # (arrival, box)
        self.body_loop = LoopMeter()
        self.contact_loop = LoopMeter()
        self.object_refits_on_motion = 0
        self._last_track_timings: dict[str, int] = {}
        self._pairer: StampPairer[Image | CompressedImage, CameraInfo] | None = None
        self._sync_lock = threading.Lock()
        self._body_params_arrived = threading.Condition(self._sync_lock)
        self._io_group = MutuallyExclusiveCallbackGroup()  # timers, query, box, mask, body params
        self._image_group = MutuallyExclusiveCallbackGroup()
        self._info_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()  # waiting calls must not block the "busy" answer
        self._pubs: dict[str, Any] = {}
        self._subs: list[Any] = []
        self._expiry_timer: Any = None
        self.teardown = DeferredTeardown(self)  # what a cleanup destroys: see ivlm_ros.deferred_teardown

        # Always available, in every lifecycle state: diagnostics, the query topic and the one-shot service.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            self.settings.diagnostics_period_s, self.publish_diagnostics, callback_group=self._io_group
        )
        self._query_sub = self.create_subscription(
            String, self.settings.query_topic, self._on_query, 10, callback_group=self._io_group
        )
        self._box_sub = self.create_subscription(
            RegionOfInterest, "~/object_box", self._on_object_box, 10, callback_group=self._io_group
        )
        self._mask_sub = self.create_subscription(
            Image, "~/object_mask", self._on_object_mask, 10, callback_group=self._io_group
        )
        self._person_box_sub = self.create_subscription(
            RegionOfInterest, "~/person_box", self._on_person_box, 10, callback_group=self._io_group
        )
        self._body_params_sub = self.create_subscription(
            SmplxParams, "~/body_params", self._on_body_params, 10, callback_group=self._io_group
        )
        self._service = self.create_service(
            EstimateInteraction,
            "~/estimate_interaction",
            self._on_estimate_request,
            qos_profile=QoSProfile(depth=SERVICE_QOS_DEPTH, reliability=QoSReliabilityPolicy.RELIABLE),
            callback_group=self._service_group,
        )
        if self.settings.autostart and not self._settings_error:
            # Configure/activate from the executor, so the log and diagnostics flow while weights load.
            self._autostart_timer = self.create_timer(0.0, self._autostart, callback_group=self._io_group)

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> None:
        """Declare every parameter; numeric ones accept an int for a float and an integral float for an int.

        Numbers are declared with ``dynamic_typing`` (a static double would refuse ``max_rate_hz: 2`` from YAML
        or ``-p`` at start-up with InvalidParameterTypeException) and stored converted to their own type; a
        value that is really wrong (a string, 2.5 for an int) is refused by our validation with the reason.
        """
        for spec in PARAMETERS:
            descriptor = ParameterDescriptor(description=spec.description, dynamic_typing=spec.numeric)
            value = self.declare_parameter(spec.name, spec.default, descriptor).value
            coerced = coerce_number(spec, value)
            if type(coerced) is not type(value):
                self.set_parameters([Parameter(spec.name, value=coerced)])
        self.add_pre_set_parameters_callback(self._coerce_numbers)

    def _coerce_numbers(self, params: list[Parameter]) -> list[Parameter]:
        """``ros2 param set /ivlm max_rate_hz 2`` stores 2.0 (see :meth:`_declare_parameters`)."""
        out = []
        for param in params:
            spec = PARAMETERS_BY_NAME.get(param.name)
            value = coerce_number(spec, param.value) if spec is not None else param.value
            out.append(param if value is param.value else Parameter(param.name, value=value))
        return out

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes: dict[str, Any] = {}
        for param in params:
            spec = PARAMETERS_BY_NAME.get(param.name)
            if spec is None:
                continue  # e.g. use_sim_time: not ours
            reason = validate_parameter(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            if (
                not spec.live
                and self._state != "unconfigured"
                and param.value != getattr(self.settings, spec.name)
            ):
                return SetParametersResult(
                    successful=False,
                    reason=f"parameter '{param.name}' is read on configure; deactivate and clean up the node "
                    "(ros2 lifecycle set /ivlm cleanup) before changing it",
                )
            changes[param.name] = param.value
        if not changes:
            return SetParametersResult(successful=True)
        candidate = settings_from_dict_partial(self.settings, changes)
        reason = pipeline_config_problem(candidate)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        if candidate.object_query != self.settings.object_query:
            self._object_box = self._object_mask = None  # they outlined the previous object
        self.settings = candidate
        self._settings_error = ""
        if self._pairer is not None:
            self._pairer.slop_s = candidate.sync_slop_s
            self._pairer.timeout_s = candidate.camera_info_timeout_s
        return SetParametersResult(successful=True)

    def _on_query(self, msg: String) -> None:
        query = msg.data.strip()
        result = self.set_parameters([Parameter("object_query", value=query)])[0]
        if result.successful:
            self.get_logger().info(f"object query set to {escape_for_log(query)}")
        else:
            self.get_logger().warning(
                f"ignored object query {escape_for_log(msg.data)}: {escape_inline(result.reason, 400)}"
            )

    def _on_object_box(self, msg: RegionOfInterest) -> None:
        if msg.width == 0 or msg.height == 0:
            self._object_box = None
            return
        x, y = float(msg.x_offset), float(msg.y_offset)
        self._object_box = (x, y, x + msg.width, y + msg.height)

    def _on_person_box(self, msg: RegionOfInterest) -> None:
        """A person's pixel box for the tracker (several people: one message per box); empty = forget all."""
        box = box_from_roi(msg)
        with self._sync_lock:
            if box is None:
                self._person_boxes = []
            else:
                self._person_boxes = [*self._person_boxes[-15:], (time.monotonic(), box)]

    def _on_object_mask(self, msg: Image) -> None:
        if msg.width == 0 or msg.height == 0:
            self._object_mask = None
            return
        try:
            self._object_mask = mask_msg_to_bool(msg)
        except InvalidInputError as exc:
            self.get_logger().warning(f"ignored object mask: {escape_inline(exc)}", throttle_duration_sec=5.0)

    def _on_body_params(self, msg: SmplxParams) -> None:
        """Validate on arrival, so a malformed body is reported once here and never fails a frame later."""
        from ivlm_core.fitting.external_body import parse_smplx_params

        self.stats.body_params_received += 1
        params = smplx_params_from_msg(msg)
        try:
            parse_smplx_params(params)
        except InvalidInputError as exc:
            self.stats.body_params_rejected += 1
            self.get_logger().warning(f"ignored ~/body_params: {escape_inline(exc)}", throttle_duration_sec=5.0)
            return
        if msg.gender.strip().lower() not in ("", "neutral"):
            self.get_logger().warning(
                f"~/body_params gender {escape_for_log(msg.gender)}: posed with the loaded neutral SMPL-X model",
                throttle_duration_sec=30.0,
            )
        now = time.monotonic()
        with self._body_params_arrived:
            self._body_params.drop_older_than(now, self.settings.body_params_timeout_s)
            self._body_params.add(_stamp_seconds(msg.header.stamp), (msg, params), now)
            self._body_params_arrived.notify_all()

    def external_body_for(self, image_header: Any) -> dict[str, np.ndarray] | None:
        """The newest fresh ~/body_params within the slop of the image stamp and in its frame, or None.

        A regressor runs on the same images, so its output for this frame may still be on its way: while
        params are flowing (fresh ones are buffered), wait up to ``body_params_wait_s`` for a stamp match.
        """
        settings = self.settings
        stamp_s = _stamp_seconds(image_header.stamp)
        deadline = time.monotonic() + settings.body_params_wait_s
        with self._body_params_arrived:
            while True:
                self._body_params.drop_older_than(time.monotonic(), settings.body_params_timeout_s)
                matches = self._body_params.within(stamp_s, settings.body_params_slop_s)
                same_frame = [p for _, (msg, p) in matches if msg.header.frame_id == image_header.frame_id]
                left = deadline - time.monotonic()
                if same_frame or left <= 0.0 or not len(self._body_params) or self._body_slot.closed:
                    break
                self._body_params_arrived.wait(min(left, 0.1))
        if not matches:
            return None
        if not same_frame:
            self.stats.body_params_rejected += 1
            frames = sorted({msg.header.frame_id for _, (msg, _) in matches})
            self.get_logger().warning(
                f"ignored ~/body_params in frame {escape_inline(frames)} for an image in "
                f"{escape_for_log(image_header.frame_id)}: the body must be expressed in the camera frame of "
                "the image",
                throttle_duration_sec=5.0,
            )
            return None
        self.stats.body_params_used += 1
        return same_frame[-1]  # newest received

    # ------------------------------------------------------------------ lifecycle
    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._settings_error:
            self._load_error = self._settings_error
            self.get_logger().error(f"cannot configure: {self._settings_error}")
            return TransitionCallbackReturn.FAILURE
        settings = self.settings
        self.get_logger().info(
            f"loading InteractVLM from '{settings.checkpoint_dir}' (device {settings.device})"
        )
        try:
            self._pipeline = load_pipeline(settings, self.get_logger().info)
            self._tracker = None
            if settings.fit_human:
                self._tracker = self._pipeline.new_body_tracker(settings.max_people, settings.track_max_missing_s)
                if not self._tracker.available:
                    self.get_logger().warning(f"bodies will not be tracked: {self._tracker.unavailable_reason}")
                else:
                    self._tracker.warm_up()  # detector graphs and optimiser imports: not on the first frame
        except Exception as exc:  # any load failure keeps the node up; diagnostics say why
            self._pipeline = None
            self._load_error = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, IvlmError | ImportError):
                self.get_logger().error(traceback.format_exc())
            hint = fix_hint(exc)
            advice = "" if hint in str(exc) else f"\nHow to fix: {hint}"
            self.get_logger().error(f"model not loaded: {exc}{advice}")
            self.publish_diagnostics()
            return TransitionCallbackReturn.FAILURE
        self._load_error = ""
        self.get_logger().info(
            f"model '{self._pipeline.model_id}' loaded on {self._pipeline.device} ({self._pipeline.dtype})"
        )
        self._create_io(settings)
        self._state = "inactive"
        self.publish_diagnostics()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._state = "active"
        self.publish_diagnostics()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._state = "inactive"
        self.publish_diagnostics()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = "unconfigured"
        self.publish_diagnostics()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _create_io(self, settings: NodeSettings) -> None:
        qos = QoSProfile(depth=settings.queue_size, reliability=qos_profile_sensor_data.reliability)
        qos.history = qos_profile_sensor_data.history
        qos.durability = qos_profile_sensor_data.durability
        if settings.input_reliability == "reliable":
            qos.reliability = QoSReliabilityPolicy.RELIABLE
        self._pairer = StampPairer(settings.sync_slop_s, settings.camera_info_timeout_s)
        self._image_gaps = SequenceGapCounter()
        self._outcomes = RecentOutcomes()  # health is judged on this configuration's frames
        image_type, topic = Image, settings.image_topic
        if settings.use_compressed:
            image_type, topic = CompressedImage, settings.image_topic.rstrip("/") + "/compressed"
        self._subs.append(
            self.create_subscription(
                image_type,
                topic,
                self._on_image,
                qos,
                callback_group=self._image_group,
                event_callbacks=SubscriptionEventCallbacks(message_lost=self._on_images_lost),
            )
        )
        self._subs.append(
            self.create_subscription(
                CameraInfo,
                settings.camera_info_topic,
                self._on_camera_info,
                qos,
                callback_group=self._info_group,
            )
        )
        self._pubs = {
            "human": self.create_publisher(HumanContact, "~/human_contact", 10),
            "object": self.create_publisher(ObjectContact, "~/object_contact", 10),
            "estimate": self.create_publisher(InteractionEstimate, "~/estimate", 10),
            "object_pose": self.create_publisher(PoseStamped, "~/object_pose", 10),
            "contact_mask": self.create_publisher(Image, "~/contact_mask", 10),
            "markers": self.create_publisher(MarkerArray, "~/markers", 10),
            "debug": self.create_publisher(Image, "~/debug_image", 10),
            "bodies": self.create_publisher(TrackedBodies, "~/tracked_bodies", 10),
        }
        try:
            self._tf = TfBroadcaster(self)
        except ImportError as exc:
            self.get_logger().warning(f"no TF output (neither tf2_ros nor tf2_msgs is installed): {exc}")
        self._expiry_timer = self.create_timer(
            _EXPIRY_PERIOD_S, self._expire_unpaired, callback_group=self._io_group
        )
        self._max_people = settings.max_people
        self._board = ContactBoard()
        self._last_bodies = None
        self._track_seen = {}
        self._stale_markers = StaleMarkers()
        self._corner_colours = CornerColourCache()
        self._body_slot, self._contact_slot, self._fit_slot = LatestSlot(), LatestSlot(), LatestSlot()
        self._workers = [
            threading.Thread(target=target, name=name, daemon=True)
            for target, name in (
                (self._body_work, "ivlm-body-loop"),
                (self._contact_work, "ivlm-contact-loop"),
                (self._fit_work, "ivlm-object-fit"),
            )
        ]
        for worker in self._workers:
            worker.start()

    def _release(self) -> None:
        for slot in (self._body_slot, self._contact_slot, self._fit_slot):
            slot.close()
        for worker in self._workers:
            worker.join(timeout=60.0)
        self._workers = []
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            with contextlib.suppress(Exception):
                tracker.close()  # the keypoint detector's resources
        self._last_bodies = None
        for sub in self._subs:
            self.teardown.destroy(self.destroy_subscription, sub)
        self._subs = []
        for pub in self._pubs.values():
            self.teardown.destroy(self.destroy_publisher, pub)
        self._pubs = {}
        if self._tf is not None:
            self._tf.destroy(lambda publisher: self.teardown.destroy(self.destroy_publisher, publisher))
            self._tf = None
        if self._expiry_timer is not None:
            self.teardown.destroy(self.destroy_timer, self._expiry_timer)
            self._expiry_timer = None
        self.teardown.wake()
        with self._model_lock:
            pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.release()
            del pipeline
            release_accelerator_memory()

    # ------------------------------------------------------------------ input
    def _on_image(self, msg: Image | CompressedImage, info: dict[str, Any]) -> None:
        """Two required arguments: rclpy then passes the MessageInfo (publication sequence number)."""
        self.stats.received += 1
        self._image_gaps.observe(info.get("publication_sequence_number"))
        self.monitor.images.tick()
        if self._state != "active" or self._pairer is None:
            self.stats.ignored_inactive += 1
            return
        now = time.monotonic()
        with self._sync_lock:
            pairs = self._pairer.add_image(_stamp_seconds(msg.header.stamp), msg, now)
        self._enqueue(pairs, now)

    def _on_images_lost(self, info: Any) -> None:
        """QoS event: the DDS reader reports samples lost in transport (not history overwrites; see
        SequenceGapCounter for those)."""
        self._dds_lost_events = int(info.total_count)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        if self._pairer is None:
            return
        self.monitor.camera_infos.tick()
        with self._sync_lock:
            pairs = self._pairer.add_info(_stamp_seconds(msg.header.stamp), msg)
        self._enqueue(pairs, time.monotonic())

    def _expire_unpaired(self) -> None:
        if self._pairer is None:
            return
        with self._sync_lock:
            pairs = self._pairer.expire(time.monotonic(), self.settings.require_camera_info)
        self._enqueue(pairs, time.monotonic())

    def _enqueue(self, pairs: list[tuple[Image | CompressedImage, CameraInfo | None]], now: float) -> None:
        for image, info in pairs:
            self._body_slot.put(Frame(image=image, info=info, received_s=now, settings=self.settings))

    # ------------------------------------------------------------------ body loop (camera rate)
    def _body_work(self) -> None:
        """Track bodies on the newest frame, paint the latest contacts on them, publish; when idle, republish
        the last frame's bodies if a contact or an object fit arrived since (a slow camera still sees them)."""
        slot = self._body_slot
        seen_version = self._board.version
        while not slot.closed:
            frame = slot.take(timeout_s=0.1)
            if frame is None:
                if self._board.version != seen_version and self._last_bodies is not None:
                    seen_version = self._board.version
                    self._republish_bodies()
                continue
            seen_version = self._board.version
            try:
                self.process_frame(frame)
            except Exception as exc:  # a bad frame must never stop the loop
                self.body_loop.failed += 1
                self._record_failure(frame.image.header, exc)
            else:
                self._outcomes.record(True)

    def _record_failure(self, header: Any, exc: Exception, loop: str = "") -> None:
        """Count a failed frame with its (escaped) reason for /diagnostics and a throttled log line."""
        reason = escape_inline(f"{loop}{type(exc).__name__}: {exc}", 400)
        self.stats.failed += 1
        if isinstance(exc, ImageTooLargeError):
            self.stats.too_large += 1
        self.stats.last_error = reason
        self._outcomes.record(False, reason)
        stamp = header.stamp
        self.get_logger().warning(
            f"frame {stamp.sec}.{stamp.nanosec:09d} dropped: {reason}", throttle_duration_sec=5.0
        )

    def process_frame(self, frame: Frame) -> None:
        """Decode, track, publish the bodies with the latest contacts; hand the frame to the contact loop."""
        start = time.monotonic()
        queue_age_ms = (start - frame.received_s) * 1e3
        settings = frame.settings
        rgb = decode_image(frame.image, settings.max_image_pixels)
        camera_k, k_problem = self._frame_camera_k(frame.info, rgb.shape[:2])
        self._check_frame_id(frame.image.header.frame_id)
        pipeline = self._pipeline
        if pipeline is None:
            raise RuntimeError("model not loaded")
        decoded = time.monotonic()
        bodies, status = self._track(frame, rgb, camera_k, k_problem, pipeline)
        tracked = time.monotonic()
        fresh = [b for b in bodies if b.missing_s == 0.0]
        coasting = [b for b in bodies if b.missing_s != 0.0]
        snapshot = BodiesSnapshot(frame.image.header, rgb, camera_k, frame.info, fresh, status, settings, coasting)
        if self._state != "active":
            return
        self._last_bodies = snapshot
        self._publish_bodies(snapshot, pipeline)
        self._contact_slot.put(ContactJob(snapshot, frame.received_s))
        self._refit_moved_objects(snapshot)
        now = time.monotonic()
        latency_ms = (now - frame.received_s) * 1e3
        self.stats.record(latency_ms, queue_age_ms)
        self.stats.timings_ms["body_loop"] = (now - start) * 1e3
        self.body_loop.record(latency_ms)
        self.monitor.processed.tick()
        if now - start > SLOW_BODY_FRAME_S:  # say where a camera-rate frame lost its time
            self.get_logger().warning(
                f"slow body frame: {(now - start) * 1e3:.0f} ms (decode {(decoded - start) * 1e3:.0f}, track "
                f"{(tracked - decoded) * 1e3:.0f} {self._last_track_timings}, publish {(now - tracked) * 1e3:.0f} "
                f"ms); tracker: {escape_inline(status, 300)}",
                throttle_duration_sec=5.0,
            )

    def _track(
        self, frame: Frame, rgb: np.ndarray, camera_k: np.ndarray | None, k_problem: str, pipeline: Any
    ) -> tuple[list[PersonBody], str]:
        """This frame's people: the external body (``~/body_params``) when one matches, else the tracker's."""
        external = self.external_body_for(frame.image.header)
        if external is not None:
            placement = pipeline.external_body_placement(external, camera_k, k_problem)
            self.monitor.body.record(bool(placement.placed), placement.status or "", source="external")
            body = PersonBody(WHOLE_IMAGE, placement, projected_box(placement, camera_k), "external")
            return [body], placement.status or ""
        tracker = self._tracker
        if tracker is None:
            return [], "fit_human is off: contacts are shown on the canonical body"
        if not tracker.available:
            return [], tracker.unavailable_reason
        if camera_k is None:
            return [], f"body not placed: {k_problem or 'no camera intrinsics (CameraInfo)'}"
        t0 = time.monotonic()
        update = tracker.update(rgb, camera_k, _stamp_seconds(frame.image.header.stamp), self._person_boxes_now())
        fit_ms = (time.monotonic() - t0) * 1e3
        bodies = [PersonBody.from_tracked(b) for b in update.bodies]
        self.stats.timings_ms["body_track"] = fit_ms
        self._last_track_timings = {k: round(v) for k, v in update.timings_ms.items()}
        self._last_track_timings["reinitialised"] = sum(int(b.reinitialised) for b in bodies)
        fresh = [b for b in bodies if b.missing_s == 0.0]
        for body in fresh:
            self.monitor.body.record(bool(body.placement.placed), body.placement.status or "", fit_ms, body.source)
        if not fresh:
            self.monitor.body.record(False, update.status or "no person tracked", fit_ms, "tracker")
        self._forget_ended_tracks(bodies)
        return bodies, update.status or ""

    def _forget_ended_tracks(self, bodies: list[PersonBody]) -> None:
        now = time.monotonic()
        for body in bodies:
            self._track_seen[body.track_id] = now
        keep_s = self.settings.track_max_missing_s + 1.0
        self._track_seen = {k: t for k, t in self._track_seen.items() if now - t <= keep_s}
        self._board.keep_tracks(set(self._track_seen))

    def _person_boxes_now(self) -> list[Any]:
        """The fresh ``~/person_box`` boxes as the tracker's PersonBox (newest first, at most max_people)."""
        from ivlm_core.tracking import PersonBox

        now = time.monotonic()
        timeout = self.settings.person_box_timeout_s
        with self._sync_lock:
            self._person_boxes = [(t, b) for t, b in self._person_boxes if now - t <= timeout]
            boxes = [b for _, b in reversed(self._person_boxes)][: self._max_people]
        return [PersonBox(*box) for box in boxes]

    def _republish_bodies(self) -> None:
        snapshot, pipeline = self._last_bodies, self._pipeline
        if snapshot is None or pipeline is None or self._state != "active":
            return
        try:
            self._publish_bodies(snapshot, pipeline)
        except Exception as exc:  # counted and reported: nothing goes unreported
            self.stats.republish_failed += 1
            self.stats.last_error = escape_inline(f"republishing bodies: {type(exc).__name__}: {exc}", 400)
            self.get_logger().warning(self.stats.last_error, throttle_duration_sec=5.0)

    def _person_results(self, snapshot: BodiesSnapshot, pipeline: Any) -> list[tuple[int, Any, Any]]:
        """(track id, InteractionResult, contact stamp) per person of the snapshot; one untracked entry when
        nobody is tracked, so the contacts are still shown (on the canonical body)."""
        from ivlm_core.pipeline import InteractionResult

        settings = snapshot.settings
        whole_image = self._max_people == 1
        people: list[PersonBody | None] = list(snapshot.bodies) or [None]
        out = []
        for body in people:
            track_id = body.track_id if body is not None else WHOLE_IMAGE
            contact = self._board.contact_for(track_id, whole_image)
            fitted = self._board.object_for(track_id) if body is not None else None
            contacts = contact.contacts if contact is not None else None
            result = InteractionResult(
                object_query=contacts.object_query if contacts is not None else settings.object_query,
                task=contacts.task if contacts is not None else settings.task,
                human=contacts.human if contacts is not None else None,
                object=contacts.object if contacts is not None else None,
                body_mesh=pipeline.body_mesh,
                body_placement=body.placement if body is not None else None,
                object_placement=fitted.placement if fitted is not None else None,
            )
            out.append((track_id, result, contact.stamp if contact is not None else None))
        return out

    def _publish_bodies(self, snapshot: BodiesSnapshot, pipeline: Any) -> None:
        """Camera-rate outputs of one frame: ~/tracked_bodies, one ~/estimate per person, ~/markers, /tf."""
        settings = snapshot.settings
        header = make_header(snapshot.header.stamp, snapshot.header.frame_id)
        pubs = self._pubs
        people = self._person_results(snapshot, pipeline)
        stamps = {track_id: stamp for track_id, _, stamp in people}
        everyone = snapshot.bodies + snapshot.coasting
        for body in snapshot.coasting:
            contact = self._board.contact_for(body.track_id, self._max_people == 1)
            stamps[body.track_id] = contact.stamp if contact is not None else None
        pubs["bodies"].publish(tracked_bodies_msg(header, everyone, snapshot.status, stamps))
        if settings.publish_tf and self._tf is not None:
            # /tf before the estimates that name its frames: a consumer can look them up as an estimate arrives
            transforms = [
                transform for track_id, result, _ in people for transform in interaction_transforms(
                    header, result, settings.tf_body_frame_prefix, settings.tf_object_frame_prefix, track_id
                )
            ]
            if transforms:
                self._tf.send(transforms)
                self.monitor.tf_transforms_sent += len(transforms)
        markers = []
        for track_id, result, contact_stamp in people:
            pubs["estimate"].publish(
                interaction_estimate_cdr(
                    header, result, pipeline.model_id, settings.human_threshold, settings.object_threshold,
                    contact_stamp if contact_stamp is not None else Time(), track_id,
                )
            )
            if settings.publish_markers:
                tracked = result.body_placement is not None and track_id != WHOLE_IMAGE
                markers += interaction_markers(
                    result, settings.human_threshold, settings.object_threshold, settings.marker_colormap,
                    settings.contact_sphere_radius_m, settings.display_distance_m,
                    ns_prefix=person_namespace(track_id) if tracked else "", colour_cache=self._corner_colours,
                )
        if settings.publish_markers:
            markers = self._stale_markers.with_deletes(markers)
            pubs["markers"].publish(
                encode_marker_array(markers, header.stamp.sec, header.stamp.nanosec, header.frame_id)
            )
        if people and people[0][2] is not None:
            newest = max(_stamp_seconds(s) for _, _, s in people if s is not None)
            self.stats.contact_age_ms = (_stamp_seconds(header.stamp) - newest) * 1e3

    # ------------------------------------------------------------------ contact loop (the VLM's rate)
    def _contact_work(self) -> None:
        lower_thread_priority()
        slot = self._contact_slot
        last_start = 0.0
        while not slot.closed:
            rate = self.settings.max_rate_hz
            if rate > 0.0:
                wait = last_start + 1.0 / rate - time.monotonic()
                if wait > 0.0:
                    time.sleep(min(wait, 0.1))
                    continue
            job = slot.take(timeout_s=0.1)
            if job is None:
                continue
            last_start = time.monotonic()
            try:
                self.process_contacts(job)
            except Exception as exc:  # a failing model call must never stop the loop
                self.contact_loop.failed += 1
                self._record_failure(job.snapshot.header, exc, "contact loop: ")
            # success is not recorded again: the body loop already counted the frame in the recent outcomes

    def process_contacts(self, job: ContactJob) -> None:
        """Run the VLM on the job's frame (the full image, or one crop per tracked person with max_people > 1),
        store each person's contact on the board, publish the contact topics, trigger the object fit."""
        from ivlm_core.pipeline import InteractionResult

        start = time.monotonic()
        snapshot = job.snapshot
        settings = snapshot.settings
        header = make_header(snapshot.header.stamp, snapshot.header.frame_id)
        stamp_s = _stamp_seconds(header.stamp)
        pipeline = self._pipeline
        if pipeline is None:
            raise RuntimeError("model not loaded")
        per_person = self._max_people > 1 and snapshot.bodies
        targets: list[PersonBody | None] = list(snapshot.bodies) if per_person else [None]
        for body in targets:
            image = snapshot.rgb
            if body is not None:
                from ivlm_core.tracking import PersonBox, person_crop

                image = person_crop(snapshot.rgb, PersonBox(*body.box), snapshot.camera_k).image
            with self._model_lock:
                contacts = pipeline.estimate_contacts(image, settings.object_query, settings.task)
            if self._state != "active":
                return
            if body is not None:
                track_id, key = body.track_id, body.track_id
            else:  # whole image: "the" person (max_people = 1) or nobody tracked
                key = WHOLE_IMAGE
                track_id = snapshot.bodies[0].track_id if len(snapshot.bodies) == 1 else WHOLE_IMAGE
            self._board.put_contact(key, PersonContact(contacts, header.stamp, stamp_s, track_id, pipeline.model_id))
            person = body if body is not None else (snapshot.bodies[0] if snapshot.bodies else None)
            placement = person.placement if person is not None else None
            result = InteractionResult(
                contacts.object_query, contacts.task, contacts.human, contacts.object, pipeline.body_mesh,
                placement, None, dict(contacts.timings_ms), contacts.contact_2d,
            )
            self._publish_contacts(header, snapshot, result, pipeline.model_id, track_id)
            self.stats.record_answers(contacts)
            self.stats.timings_ms.update(contacts.timings_ms)
            self._request_object_fit(snapshot, key, person)
        self._body_slot.wake()  # an idle body loop republishes the last frame with the new contacts
        self.contact_loop.record((time.monotonic() - job.received_s) * 1e3)
        self.stats.timings_ms["contact_loop"] = (time.monotonic() - start) * 1e3

    def _publish_contacts(
        self, header: Any, snapshot: BodiesSnapshot, result: Any, model_id: str, track_id: int
    ) -> None:
        """Contact-rate outputs, stamped with the frame the VLM saw: contacts, 2D mask, debug image."""
        settings, pubs = snapshot.settings, self._pubs
        if result.human is not None:
            pubs["human"].publish(
                human_contact_msg(
                    header, result.object_query, model_id, result.human, settings.human_threshold,
                    header.stamp, track_id,
                )
            )
        if result.object is not None:
            pubs["object"].publish(
                object_contact_msg(
                    header, model_id, result.object, None, settings.object_threshold, header.stamp, track_id
                )
            )
        contact_2d = result.contact_2d
        if contact_2d is not None and contact_2d.logits is not None:
            mask = contact_2d.mask(settings.human_threshold).astype(np.uint8) * 255
            pubs["contact_mask"].publish(
                Image(header=header, height=mask.shape[0], width=mask.shape[1], encoding="mono8",
                      is_bigendian=0, step=mask.shape[1], data=mask.tobytes())
            )
        if settings.publish_debug_image:
            debug = compose_debug_image(
                snapshot.rgb, result, snapshot.camera_k, settings.human_threshold, settings.object_threshold
            )
            pubs["debug"].publish(Image(header=header, **rgb_to_image_fields(debug)))

    # ------------------------------------------------------------------ object fit (its own thread)
    def _request_object_fit(self, snapshot: BodiesSnapshot, key: int, body: PersonBody | None) -> None:
        """Queue an object fit for one person (newest request wins); never run on the body loop's path."""
        settings = snapshot.settings
        if not settings.fit_object or settings.task != "interaction" or body is None or not body.placement.placed:
            return
        contact = self._board.contact_for(key, self._max_people == 1)
        if contact is None or contact.contacts.object is None:
            return
        self._fit_slot.put(FitJob(snapshot, body, key, contact, self._object_mask,
                                  self._object_box or parse_box(settings.object_box)))

    def _refit_moved_objects(self, snapshot: BodiesSnapshot) -> None:
        """Refit when a person's pelvis moved more than ``object_refit_motion_m`` since their last fit."""
        settings = snapshot.settings
        if not settings.fit_object or settings.task != "interaction":
            return
        for body in snapshot.bodies:
            fitted = self._board.object_for(body.track_id)
            pelvis = body.pelvis
            if fitted is None or fitted.pelvis is None or pelvis is None:
                continue
            if float(np.linalg.norm(pelvis - fitted.pelvis)) > settings.object_refit_motion_m:
                self.object_refits_on_motion += 1
                key = body.track_id if self._max_people > 1 else WHOLE_IMAGE
                self._request_object_fit(snapshot, key, body)

    def _fit_work(self) -> None:
        lower_thread_priority()
        slot = self._fit_slot
        while not slot.closed:
            job = slot.take(timeout_s=0.1)
            if job is None:
                continue
            try:
                self.process_object_fit(job)
            except Exception as exc:  # reported, never fatal
                self.monitor.object.record(False, escape_inline(f"{type(exc).__name__}: {exc}", 400))
                self.stats.last_error = self.monitor.object.last_status
                self.get_logger().warning(f"object fit failed: {self.stats.last_error}", throttle_duration_sec=5.0)

    def process_object_fit(self, job: FitJob) -> None:
        snapshot = job.snapshot
        pipeline = self._pipeline
        if pipeline is None:
            return
        mask = job.object_mask
        if mask is not None and mask.shape != snapshot.rgb.shape[:2]:
            mask = None
        if mask is None and job.object_box is not None and job.contact.contacts.object is not None:
            with self._model_lock:  # SAM is the contact model's: not at the same time as the VLM
                mask = pipeline.segment_object_box(snapshot.rgb, job.object_box)
        contacts = job.contact.contacts
        placement = pipeline.place_object(
            snapshot.rgb, contacts.human, contacts.object, job.body.placement, raw_camera_k(snapshot.info), mask,
            previous=self._previous_object(job.body),
        )
        report = placement.report or {}
        self.monitor.object.record(bool(placement.placed), placement.status or "",
                                   1e3 * float(report.get("fit_time_s", "nan")))
        if placement.placed and "contact_distance_m" in report:
            self.monitor.last_contact_distance_m = float(report["contact_distance_m"])
        self._board.put_object(job.body.track_id, PersonObject(placement, job.body.pelvis,
                                                               _stamp_seconds(snapshot.header.stamp)))
        if self._state == "active":
            pose = object_pose_stamped_msg(make_header(snapshot.header.stamp, snapshot.header.frame_id), placement)
            if pose is not None:
                self._pubs["object_pose"].publish(pose)
        self._body_slot.wake()

    def _previous_object(self, body: PersonBody) -> ObjectPlacement | None:
        """This person's last object placement, moved with the pelvis since: the fit's extra start pose and
        the pose it keeps when two fit almost equally well, so the object does not flip between refits."""
        last = self._board.object_for(body.track_id)
        return None if last is None else moved_with_pelvis(last, body.pelvis)

    def _frame_camera_k(self, info: CameraInfo | None, image_hw: tuple[int, int]) -> tuple[np.ndarray | None, str]:
        """The frame's usable K (or None) and why it is unusable (or ''); an unusable K is counted and warned
        about, never a failed frame."""
        camera_k, problem = camera_matrix(info)
        if problem:
            self.stats.camera_info_invalid += 1
            self.stats.last_camera_info_problem = problem
            self.get_logger().warning(
                f"{problem}; contacts are published without placement", throttle_duration_sec=5.0
            )
        if info is not None and (info.width, info.height) != (0, 0):
            height, width = image_hw
            if (info.width, info.height) != (width, height):
                self.stats.camera_info_size_mismatch += 1
                self.get_logger().warning(
                    f"CameraInfo is {info.width}x{info.height} but the image is {width}x{height}: its K belongs "
                    "to another resolution, so placement will be off; publish the CameraInfo of this stream",
                    throttle_duration_sec=5.0,
                )
        return camera_k, problem

    def _check_frame_id(self, frame_id: str) -> None:
        if not frame_id and not self._warned_empty_frame_id:
            self._warned_empty_frame_id = True
            self.get_logger().warning(
                "images arrive with an empty header.frame_id: every output carries '' and cannot be placed in "
                "TF; set the camera driver's optical frame id (warned once)"
            )

    # ------------------------------------------------------------------ one-shot service
    def _on_estimate_request(
        self, request: EstimateInteraction.Request, response: EstimateInteraction.Response
    ) -> EstimateInteraction.Response:
        """Admit the request into the bounded queue (or answer "busy" at once), then serve it."""
        self.stats.service_requests += 1
        with self._service_lock:
            waiting = self._service_waiting
            admitted = waiting < SERVICE_QUEUE_DEPTH
            if admitted:
                self._service_waiting += 1
        if not admitted:
            self.stats.service_busy += 1
            response.success = False
            response.message = (
                f"busy: {waiting} requests queued (at most {SERVICE_QUEUE_DEPTH}); try again later"
            )
            return response
        try:
            return self._serve_estimate(request, response)
        finally:
            with self._service_lock:
                self._service_waiting -= 1

    def _serve_estimate(
        self, request: EstimateInteraction.Request, response: EstimateInteraction.Response
    ) -> EstimateInteraction.Response:
        settings = self.settings
        try:
            args = estimate_arguments(request, settings)
            with self._model_lock:
                pipeline = self._pipeline
                if pipeline is None:
                    raise RuntimeError(f"model not loaded ({self._load_error or 'node not configured'})")
                result = pipeline.estimate(
                    args.rgb,
                    args.query,
                    task=args.task,
                    camera_k=args.camera_k,
                    object_mask=args.object_mask,
                    object_box=args.object_box,
                    external_body=args.external_body,
                )
            header = make_header(request.image.header.stamp, request.image.header.frame_id)
            response.estimate = interaction_estimate_msg(
                header, result, pipeline.model_id, settings.human_threshold, settings.object_threshold
            )
            response.success = True
            response.message = f"{args.task} for {escape_for_log(args.query)} in {result.timings_ms['total']:.0f} ms"
        except Exception as exc:  # the service answers every request; failures are reported, not raised
            response.success = False
            response.message = escape_inline(f"{type(exc).__name__}: {exc}", 1000)
        return response

    # ------------------------------------------------------------------ diagnostics
    def publish_diagnostics(self) -> None:
        """Publish the four statuses (assembled by ``diagnostics.diagnostic_array``) from the node's state."""
        pairer = self._pairer
        report = NodeReport(
            node_name=self.get_name(),
            lifecycle_state=self._state,
            error=self._load_error or self._settings_error,
            pipeline=self._pipeline,
            settings=self.settings,
            stats=self.stats,
            outcomes=self._outcomes,
            monitor=self.monitor,
            body_loop=self.body_loop,
            contact_loop=self.contact_loop,
            object_region=object_region(
                self._object_mask is not None, bool(self._object_box), self.settings.object_box
            ),
            frames_lost_before_callback=self._image_gaps.lost,
            frames_lost_dds_event=self._dds_lost_events,
            frames_dropped=self._body_slot.dropped + (pairer.superseded_dropped if pairer else 0),
            frames_unpaired_dropped=pairer.unpaired_dropped if pairer else 0,
            contact_frames_skipped=self._contact_slot.dropped,
            service_queued=self._service_waiting,
            object_refits_on_motion=self.object_refits_on_motion,
            max_people=self._max_people,
            tf_backend=self._tf.backend if self._tf is not None else "",
        )
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), report))


def settings_from_dict_partial(current: NodeSettings, changes: dict[str, Any]) -> NodeSettings:
    """``current`` with ``changes`` applied (each already validated on its own)."""
    values = {spec.name: getattr(current, spec.name) for spec in PARAMETERS}
    values.update(changes)
    return settings_from_dict(values)


def decode_image(msg: Image | CompressedImage, max_pixels: int | None = None) -> np.ndarray:
    """RGB of a raw or compressed image; sizes above ``max_pixels`` are refused before decoding."""
    if isinstance(msg, CompressedImage):
        return compressed_msg_to_rgb(msg, max_pixels)
    return image_msg_to_rgb(msg, max_pixels)


LOAD_PROGRESS_LOG_PERIOD_S = 5.0  # a 27 GB load logs its progress at most once per period


def load_pipeline(settings: NodeSettings, log: Callable[[str], Any] | None = None) -> Any:
    """InteractionPipeline.load (it raises with the fix for a missing checkpoint, body model or CUDA).

    `log` receives the weight-loading progress, at most one line every LOAD_PROGRESS_LOG_PERIOD_S.
    """
    from ivlm_core.pipeline import InteractionPipeline
    from ivlm_core.pipeline_config import PipelineConfig
    from ivlm_core.progress import ThrottledProgressLog

    progress = None if log is None else ThrottledProgressLog(log, LOAD_PROGRESS_LOG_PERIOD_S)
    return InteractionPipeline.load(PipelineConfig.from_dict(settings.pipeline_config_dict()), progress=progress,
                                    progress_bar=False)


def release_accelerator_memory() -> None:
    import gc

    gc.collect()
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main(args: list[str] | None = None) -> int:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # see GIL_SWITCH_INTERVAL_S: the body loop must get the GIL
    rclpy.init(args=args if args is not None else sys.argv)
    node = IvlmNode()
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)

    def stop(signum: int, _frame: Any) -> None:
        executor.create_task(lambda: None)
        rclpy.try_shutdown()

    signal.signal(signal.SIGTERM, stop)
    node.teardown.enable()  # a cleanup's entities are destroyed here, between two waits (ivlm_ros.deferred_teardown)
    try:
        while rclpy.ok():  # executor.spin(), with the teardown on this thread
            node.teardown.run_pending()
            try:
                executor.spin_once()
            except InvalidHandle:
                # rclpy's wait set met an entity destroyed under it: not ours any more (they are destroyed on
                # this thread), but one race must not take the node down; counted in the diagnostics
                node.stats.executor_races += 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        with contextlib.suppress(Exception):
            node._release()
        executor.shutdown(timeout_sec=1.0)
        node.teardown.run_pending()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
