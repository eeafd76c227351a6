"""Destroying a node's publishers, subscriptions and timers on the thread that builds the executor's wait sets.

rclpy (jazzy, 7.1) is not safe against destroying an entity from one thread while another builds a wait set:
``Executor._wait_for_ready_callbacks`` copies the node's waitables (every publisher and subscription has a QoS
event waitable), and when one of them is destroyed before it is entered, ``add_to_wait_set`` raises
``InvalidHandle`` ("destruction was requested") out of ``spin()`` (ros2/rclpy#1206, #1284). A lifecycle
transition runs in a worker thread of the ``MultiThreadedExecutor`` while the spinning thread waits, so a
cleanup that destroys its entities there races it.

With ``deferred`` set (by the node's own spin loop), :meth:`destroy` only takes the entity off the node's use
and queues it; the spin loop calls :meth:`run_pending` between two ``spin_once`` calls, where no wait set is
being built. A node spun by somebody else's executor keeps the immediate destruction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class DeferredTeardown:
    """Entities queued for destruction, destroyed by the thread that spins the executor."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self._lock = threading.Lock()
        self._pending: list[tuple[Callable[[Any], Any], Any]] = []
        self._wake: Any = None  # a guard condition, once enabled: queued entities are destroyed at the next wake-up

    @property
    def deferred(self) -> bool:
        """Whether :meth:`destroy` queues (after :meth:`enable`) rather than destroys at once."""
        return self._wake is not None

    def enable(self) -> None:
        """Called by the spin loop that will call :meth:`run_pending` between its ``spin_once`` calls."""
        if self._wake is None:
            self._wake = self._node.create_guard_condition(lambda: None)

    def destroy(self, destroy: Callable[[Any], Any], entity: Any) -> None:
        """``destroy(entity)`` now, or on the spinning thread when deferred (e.g. ``node.destroy_publisher``)."""
        if not self.deferred:
            destroy(entity)
            return
        with self._lock:
            self._pending.append((destroy, entity))

    def wake(self) -> None:
        """Wakes the spinning thread's wait, so that what was queued is destroyed now rather than at the next
        message or timer."""
        if self.deferred:
            self._wake.trigger()

    def run_pending(self) -> int:
        """Destroys what was queued; only ever from the thread that spins the executor. Returns how many."""
        with self._lock:
            pending, self._pending = self._pending, []
        for destroy, entity in pending:
            destroy(entity)
        return len(pending)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)
