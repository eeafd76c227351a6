"""What the node reports on /diagnostics: its counters, the health level, frames lost before the callback, and
the DiagnosticArray built from them (:func:`diagnostic_array`).

Kept apart from the node so the level rules and the key names are in one place (an aggregator analyzer
config or a renamed status entry touches only this module and ``messages.diagnostics_msg``). The node only
gathers its state into a :class:`NodeReport` and publishes the array.

Level rules (the ``ivlm: model`` status):
- ERROR: the model is not loaded because of an error, or every one of the recent frames failed (>= 3 frames);
- WARN: not loaded / not active, or more than :data:`FAILURE_WARN_RATIO` of the last :data:`RECENT_FRAMES`
  frames failed;
- OK otherwise. The message of a WARN/ERROR from failures carries the last failure reason.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from ivlm_ros.component_status import ComponentMonitor, RateMeter
from ivlm_ros.messages import diagnostics_msg

RECENT_FRAMES = 20
FAILURE_WARN_RATIO = 0.2
MIN_FRAMES_FOR_ERROR = 3


@dataclass
class Stats:
    """Counters reported in /diagnostics (written by callbacks and the worker; ints/floats are atomic)."""

    received: int = 0
    processed: int = 0
    failed: int = 0
    too_large: int = 0  # refused by max_image_pixels before decoding (also counted in failed)
    ignored_inactive: int = 0
    camera_info_invalid: int = 0  # frames whose K could not be used: contacts without placement
    camera_info_size_mismatch: int = 0
    body_params_received: int = 0
    body_params_used: int = 0  # frames whose body came from ~/body_params
    body_params_rejected: int = 0  # malformed, or stamp-matched but in another frame_id
    executor_races: int = 0  # rclpy InvalidHandle out of spin_once, survived (see ivlm_ros.deferred_teardown)
    service_requests: int = 0
    service_busy: int = 0  # answered at once with success=false, "busy: ..."
    republish_failed: int = 0  # the idle body loop could not republish the last frame with new contacts
    last_latency_ms: float = float("nan")
    mean_latency_ms: float = float("nan")
    last_queue_age_ms: float = float("nan")
    last_error: str = ""
    last_camera_info_problem: str = ""
    answers_truncated: int = 0  # answers cut by max_new_tokens before their mask token (contact unknown)
    last_answer_status: str = ""  # contact / no_contact / truncated (+ why) of the last processed frame
    timings_ms: dict[str, float] = field(default_factory=dict)
    contact_age_ms: float = float("nan")  # last published frame's stamp minus its contact's image stamp

    def record_answers(self, result: object) -> None:
        """Count answers cut before their mask token: they are unknowns, not "no contact"."""
        estimates = [e for e in (result.human, result.object, result.contact_2d) if e is not None]
        truncated = [e for e in estimates if getattr(e, "answer_status", "") == "truncated"]
        self.answers_truncated += len(truncated)
        if estimates:
            last = truncated[0] if truncated else estimates[0]
            status = getattr(last, "answer_status", "")
            message = getattr(last, "answer_message", "")
            self.last_answer_status = f"{status}: {message}" if message and status == "truncated" else status

    def record(self, latency_ms: float, queue_age_ms: float) -> None:
        self.processed += 1
        self.last_latency_ms = latency_ms
        self.last_queue_age_ms = queue_age_ms
        if np.isnan(self.mean_latency_ms):
            self.mean_latency_ms = latency_ms
        else:
            self.mean_latency_ms = 0.9 * self.mean_latency_ms + 0.1 * latency_ms


class LoopMeter:
    """Rate, latency and counts of one of the node's loops (body at camera rate, contact at the VLM's)."""

    def __init__(self, recent: int = 50) -> None:
        self.rate = RateMeter()
        self.processed = 0
        self.failed = 0
        self.latency_ms_last = float("nan")
        self._recent: deque[float] = deque(maxlen=recent)

    def record(self, latency_ms: float) -> None:
        """One frame done, ``latency_ms`` after its image arrived."""
        self.processed += 1
        self.latency_ms_last = latency_ms
        self._recent.append(latency_ms)
        self.rate.tick()

    def values(self, prefix: str) -> dict[str, float | int]:
        """Diagnostics keys ``<prefix>_rate_hz``, ``<prefix>_latency_ms_{last,median,worst}``, counts."""
        recent = list(self._recent)
        return {
            f"{prefix}_rate_hz": self.rate.rate_hz(),
            f"{prefix}_latency_ms_last": self.latency_ms_last,
            f"{prefix}_latency_ms_median": float(np.median(recent)) if recent else float("nan"),
            f"{prefix}_latency_ms_worst": float(max(recent)) if recent else float("nan"),
            f"{prefix}_frames_processed": self.processed,
            f"{prefix}_frames_failed": self.failed,
        }


class RecentOutcomes:
    """Success/failure of the last ``size`` frames the worker took, for the health level."""

    def __init__(self, size: int = RECENT_FRAMES) -> None:
        self._outcomes: deque[bool] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.last_failure = ""

    def record(self, ok: bool, reason: str = "") -> None:
        with self._lock:
            self._outcomes.append(ok)
            if not ok:
                self.last_failure = reason

    def counts(self) -> tuple[int, int]:
        """(frames, failures) in the window."""
        with self._lock:
            return len(self._outcomes), sum(1 for ok in self._outcomes if not ok)


def frame_health(outcomes: RecentOutcomes) -> tuple[bytes, str] | None:
    """(level, message) when recent frames fail, None when they are healthy."""
    frames, failures = outcomes.counts()
    if not failures:
        return None
    summary = f"{failures} of the last {frames} frames failed; last: {outcomes.last_failure}"
    if failures == frames and frames >= MIN_FRAMES_FOR_ERROR:
        return DiagnosticStatus.ERROR, f"every frame fails: {summary}"
    if failures / frames > FAILURE_WARN_RATIO or failures == frames:
        return DiagnosticStatus.WARN, f"frames failing: {summary}"
    return None


class SequenceGapCounter:
    """Messages the publisher sent that never reached our callback, from the DDS publication sequence number.

    A KEEP_LAST reader history overwrites samples the executor did not take in time, silently (DDS reports no
    "message lost" event for that). Each sample carries its writer's sequence number, so a jump from n to
    n + k means k - 1 samples were lost between the publisher and the callback. Assumes one publisher per
    topic (rclpy does not expose the writer id); a backwards jump (a restarted publisher) starts over.
    """

    def __init__(self) -> None:
        self.lost = 0
        self._last: int | None = None

    def observe(self, sequence_number: int | None) -> None:
        if not sequence_number:  # 0/None: the RMW does not report sequence numbers
            return
        if self._last is not None and sequence_number > self._last:
            self.lost += sequence_number - self._last - 1
        self._last = sequence_number


# Keys of the 'model' status that the 'input' status repeats.
INPUT_KEYS = ("frames_received", "frames_dropped", "frames_unpaired_dropped")


@dataclass(frozen=True)
class NodeReport:
    """The node's state at one /diagnostics tick: its meters, and the counts only its queues know."""

    node_name: str
    lifecycle_state: str
    error: str  # why the model is not loaded (a load or parameter error); "" otherwise
    pipeline: Any  # the loaded InteractionPipeline, None when not loaded
    settings: Any  # NodeSettings
    stats: Stats
    outcomes: RecentOutcomes
    monitor: ComponentMonitor
    body_loop: LoopMeter
    contact_loop: LoopMeter
    object_region: str  # see object_region()
    frames_lost_before_callback: int
    frames_lost_dds_event: int
    frames_dropped: int  # skipped by the body loop or superseded before pairing with CameraInfo
    frames_unpaired_dropped: int
    contact_frames_skipped: int
    service_queued: int
    object_refits_on_motion: int
    max_people: int
    tf_backend: str


def object_region(has_mask: bool, has_box: bool, box_parameter: str) -> str:
    """Where the object fit looks: 'mask' / 'box' (from the topics), 'box parameter', or 'none'."""
    if has_mask:
        return "mask"
    if has_box:
        return "box"
    return "box parameter" if box_parameter.strip() else "none"


def model_health(report: NodeReport) -> tuple[bytes, str]:
    """Level and message of the 'model' status (the rules are in the module docstring)."""
    stats = report.stats
    if report.error:
        return DiagnosticStatus.ERROR, f"model not loaded: {report.error}"
    if report.pipeline is None:
        return DiagnosticStatus.WARN, f"node {report.lifecycle_state}: model not loaded"
    if report.lifecycle_state != "active":
        return DiagnosticStatus.WARN, f"model loaded, node {report.lifecycle_state}"
    failing = frame_health(report.outcomes)
    if failing is not None:
        return failing
    if stats.last_answer_status.startswith("truncated"):
        return DiagnosticStatus.WARN, f"last {stats.last_answer_status}; raise max_new_tokens"
    return DiagnosticStatus.OK, f"active, {stats.processed} frames processed"


def model_values(report: NodeReport) -> dict[str, Any]:
    """Key/values of the 'model' status: counters, both loops' rates and latencies, per-stage timings."""
    stats, pipeline, settings = report.stats, report.pipeline, report.settings
    recent, recent_failed = report.outcomes.counts()
    values: dict[str, Any] = {
        "lifecycle_state": report.lifecycle_state,
        "model_loaded": pipeline is not None,
        "model_id": getattr(pipeline, "model_id", ""),
        "device": getattr(pipeline, "device", settings.device),
        "dtype": getattr(pipeline, "dtype", settings.dtype),
        "decoder_kernels": getattr(pipeline, "decoder_kernels", ""),
        "task": settings.task,
        "object_query": settings.object_query,
        "object_region": report.object_region,
        "frames_received": stats.received,
        "frames_lost_before_callback": report.frames_lost_before_callback,
        "frames_lost_dds_event": report.frames_lost_dds_event,
        "frames_processed": stats.processed,
        "frames_dropped": report.frames_dropped,
        "frames_unpaired_dropped": report.frames_unpaired_dropped,
        "frames_failed": stats.failed,
        "frames_too_large": stats.too_large,
        "frames_ignored_inactive": stats.ignored_inactive,
        "recent_frames": recent,
        "recent_frames_failed": recent_failed,
        "camera_info_invalid": stats.camera_info_invalid,
        "camera_info_size_mismatch": stats.camera_info_size_mismatch,
        "last_camera_info_problem": stats.last_camera_info_problem,
        "body_params_received": stats.body_params_received,
        "body_params_used": stats.body_params_used,
        "body_params_rejected": stats.body_params_rejected,
        "executor_races": stats.executor_races,
        "service_requests": stats.service_requests,
        "service_busy": stats.service_busy,
        "service_queued": report.service_queued,
        "republish_failed": stats.republish_failed,
        "latency_ms_last": stats.last_latency_ms,
        "latency_ms_mean": stats.mean_latency_ms,
        "processing_rate_hz": report.monitor.processed.rate_hz(),
        **report.body_loop.values("body"),
        **report.contact_loop.values("contact"),
        "contact_frames_skipped": report.contact_frames_skipped,
        "contact_age_ms": stats.contact_age_ms,
        "object_refits_on_motion": report.object_refits_on_motion,
        "max_people": report.max_people,
        "queue_age_ms": stats.last_queue_age_ms,
        "last_error": report.error or stats.last_error,
        "answers_truncated": stats.answers_truncated,
        "last_answer_status": stats.last_answer_status,
    }
    for name, ms in list(stats.timings_ms.items()):  # a copy: both loops write timings
        values[f"timing_ms_{name}"] = float(ms)
    return values


def diagnostic_array(stamp: Time, report: NodeReport) -> DiagnosticArray:
    """The four statuses: 'model' (built here) and the monitor's 'input', 'body tracker' and 'object fit'."""
    level, message = model_health(report)
    values = model_values(report)
    array = diagnostics_msg(stamp, report.node_name, level, message, values, str(values["device"]))
    array.status.extend(
        report.monitor.statuses(
            report.node_name,
            report.settings,
            report.lifecycle_state == "active",
            {k: values[k] for k in INPUT_KEYS},
            report.tf_backend,
            {k: v for k, v in values.items() if k.startswith(("body_", "contact_")) and "params" not in k},
        )
    )
    return array
