"""Diagnostics shaped for the robot's ``diagnostic_aggregator``: one status per component, named
``<node>: <component>`` (``ivlm: model``, ``ivlm: input``, ``ivlm: body tracker``, ``ivlm: object fit``), so the
analyzers in ``config/ivlm_analyzers.yaml`` file each under its own group. Rates and latencies are key/values
with their unit in the key (``input_rate_hz``, ``latency_ms_last``, ``fit_time_ms_last``).

The ``model`` status is built by the node with :mod:`ivlm_ros.diagnostics` (lifecycle, model, latency, frame
counters, health level); this module measures
rates and keeps the per-result counters of the body and object fits, and builds the other three statuses.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from ivlm_core.user_text import escape_inline

MODEL, INPUT, BODY_TRACKER, OBJECT_FIT = "model", "input", "body tracker", "object fit"
COMPONENTS: tuple[str, ...] = (MODEL, INPUT, BODY_TRACKER, OBJECT_FIT)
RATE_WINDOW_S = 5.0


def status_name(node_name: str, component: str) -> str:
    """The status name the aggregator matches (``config/ivlm_analyzers.yaml``): '<node>: <component>'."""
    return f"{node_name}: {component}"


class RateMeter:
    """Events per second over the last ``window_s`` seconds (thread-safe; callbacks and the worker tick)."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        with self._lock:
            self._times.append(time.monotonic() if now is None else now)

    def rate_hz(self, now: float | None = None) -> float:
        """Events in the last window divided by the window (0 when idle)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._times and self._times[0] < now - self.window_s:
                self._times.popleft()
            return len(self._times) / self.window_s

    def last_age_s(self, now: float | None = None) -> float:
        """Seconds since the last event (inf when none yet)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return now - self._times[-1] if self._times else float("inf")


@dataclass
class FitCounters:
    """What one fit (body or object) did over the processed frames."""

    attempted: int = 0
    placed: int = 0
    last_placed: bool = False
    last_status: str = ""
    last_fit_time_ms: float = float("nan")
    last_source: str = ""

    def record(self, placed: bool, status: str, fit_time_ms: float = float("nan"), source: str = "") -> None:
        self.attempted += 1
        self.placed += int(placed)
        self.last_placed = placed
        self.last_status = status
        self.last_fit_time_ms = fit_time_ms
        self.last_source = source


class ComponentMonitor:
    """Input rates and body/object fit counters, fed by the node's callbacks and worker."""

    def __init__(self) -> None:
        self.images = RateMeter()
        self.camera_infos = RateMeter()
        self.processed = RateMeter()
        self.body = FitCounters()
        self.object = FitCounters()
        self.tf_transforms_sent = 0
        self.last_contact_distance_m = float("nan")

    def record_result(self, result: Any) -> None:
        """Count what the body and object fits did for one processed frame (only when they ran)."""
        self.processed.tick()
        body = result.body_placement
        if body is not None:
            source = "external" if "external" in (body.status or "") else "keypoint fit"
            self.body.record(bool(body.placed), body.status or "", source=source)
        obj = result.object_placement
        if obj is not None:
            report = obj.report or {}
            self.object.record(bool(obj.placed), obj.status or "", 1e3 * float(report.get("fit_time_s", "nan")))
            if obj.placed and "contact_distance_m" in report:
                self.last_contact_distance_m = float(report["contact_distance_m"])

    def statuses(
        self,
        node_name: str,
        settings: Any,
        active: bool,
        input_values: Mapping[str, Any],
        tf_backend: str,
        body_values: Mapping[str, Any] | None = None,
    ) -> list[DiagnosticStatus]:
        """The 'input', 'body tracker' and 'object fit' statuses (the node builds 'model'); ``body_values``
        (the loops' rates, latencies, contact age) are added to 'body tracker'."""
        now = time.monotonic()
        image_rate = self.images.rate_hz(now)
        image_age = self.images.last_age_s(now)
        if not active:
            level, message = DiagnosticStatus.OK, "node not active: input not read"
        elif image_age > RATE_WINDOW_S:
            level, message = DiagnosticStatus.WARN, f"no image on {settings.image_topic} for {RATE_WINDOW_S:.0f} s"
        else:
            processed = self.processed.rate_hz(now)
            level, message = DiagnosticStatus.OK, f"{image_rate:.1f} Hz in, {processed:.1f} Hz processed"
        input_status = make_status(
            status_name(node_name, INPUT),
            level,
            message,
            {
                "image_topic": settings.image_topic + ("/compressed" if settings.use_compressed else ""),
                "camera_info_topic": settings.camera_info_topic,
                "input_rate_hz": image_rate,
                "camera_info_rate_hz": self.camera_infos.rate_hz(now),
                "processing_rate_hz": self.processed.rate_hz(now),
                "last_image_age_s": image_age,
                **input_values,
            },
        )
        return [
            input_status,
            self._fit_status(
                status_name(node_name, BODY_TRACKER),
                self.body,
                settings.fit_human,
                "fit_human",
                {
                    "body_source": self.body.last_source,
                    "tf_frames": f"{settings.tf_body_frame_prefix}<id>" if settings.publish_tf else "off",
                    "tf_backend": tf_backend or "none",
                    "tf_transforms_sent": self.tf_transforms_sent,
                    **(body_values or {}),
                },
            ),
            self._fit_status(
                status_name(node_name, OBJECT_FIT),
                self.object,
                settings.fit_object,
                "fit_object",
                {
                    "fit_time_ms_last": self.object.last_fit_time_ms,
                    "contact_distance_m_last": self.last_contact_distance_m,
                    "tf_frames": f"{settings.tf_object_frame_prefix}<label>" if settings.publish_tf else "off",
                },
            ),
        ]

    @staticmethod
    def _fit_status(
        name: str, counters: FitCounters, enabled: bool, parameter: str, extra: Mapping[str, Any]
    ) -> DiagnosticStatus:
        if counters.attempted == 0:
            level = DiagnosticStatus.OK
            message = "no fit yet" if enabled else f"off ({parameter}: false)"
        elif not counters.last_placed:
            level, message = DiagnosticStatus.WARN, f"last frame not placed: {counters.last_status}"
        else:
            level = DiagnosticStatus.OK
            message = f"{counters.placed}/{counters.attempted} placed; last: {counters.last_status}"
        values = {
            parameter: enabled,
            "fits_attempted": counters.attempted,
            "fits_placed": counters.placed,
            "last_status": counters.last_status,
            **extra,
        }
        return make_status(name, level, message, values)


def make_status(
    name: str, level: bytes, message: str, values: Mapping[str, Any], hardware_id: str = "ivlm"
) -> DiagnosticStatus:
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=str(k), value=format_value(v)) for k, v in values.items()]
    return status


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape_inline(value, 1000)  # topic names and fit statuses may carry user text
