"""Approximate-time pairing of Image/CameraInfo and the newest-frame mailbox (no ROS needed)."""

from __future__ import annotations

import threading
import time

from ivlm_ros.latest_slot import LatestSlot
from ivlm_ros.stamp_sync import StampedBuffer, StampPairer


def test_info_first_pairs_the_image_immediately() -> None:
    pairer: StampPairer[str, str] = StampPairer(slop_s=0.01, timeout_s=0.2)
    assert pairer.add_info(10.0, "info10") == []
    assert pairer.add_image(10.004, "img", arrival_s=0.0) == [("img", "info10")]


def test_image_first_waits_for_its_info_and_picks_the_closest_stamp() -> None:
    pairer: StampPairer[str, str] = StampPairer(slop_s=0.01, timeout_s=0.2)
    assert pairer.add_image(5.0, "img5", arrival_s=0.0) == []
    assert pairer.add_info(4.5, "far") == []  # outside the slop
    assert pairer.add_info(5.002, "near") == [("img5", "near")]
    pairer.add_info(7.008, "i1")
    pairer.add_info(7.001, "i2")
    assert pairer.add_image(7.0, "img7", arrival_s=0.0) == [("img7", "i2")]


def test_unpaired_images_expire_alone_or_are_dropped_when_info_is_required() -> None:
    pairer: StampPairer[str, str] = StampPairer(slop_s=0.01, timeout_s=0.2)
    pairer.add_image(1.0, "a", arrival_s=100.0)
    pairer.add_image(2.0, "b", arrival_s=100.15)
    assert pairer.expire(100.1, require_info=False) == []
    assert pairer.expire(100.25, require_info=False) == [("a", None)]
    assert pairer.expire(100.4, require_info=True) == []
    assert pairer.unpaired_dropped == 1


def test_pending_overflow_is_counted() -> None:
    pairer: StampPairer[int, str] = StampPairer(slop_s=0.01, timeout_s=10.0, max_pending=3)
    for i in range(5):
        pairer.add_image(float(i), i, arrival_s=0.0)
    assert pairer.unpaired_dropped == 2
    assert pairer.add_info(4.0, "i") == [(4, "i")]


def test_stamped_buffer_lookup_by_stamp_and_age() -> None:
    buffer: StampedBuffer[str] = StampedBuffer(max_items=3)
    buffer.add(1.00, "a", arrival_s=10.0)
    buffer.add(1.01, "b", arrival_s=10.5)
    buffer.add(1.00, "c", arrival_s=11.0)  # a second estimate for the same stamp
    assert [item for _, item in buffer.within(1.0, 0.02)] == ["a", "b", "c"]  # arrival order
    assert buffer.closest(1.0, 0.02) == "c"  # nearest stamp, the newest on a tie
    assert buffer.closest(1.0, 0.0) == "c" and buffer.within(2.0, 0.5) == []
    assert buffer.drop_older_than(now_s=11.2, max_age_s=1.0) == 1 and len(buffer) == 2
    buffer.add(5.0, "d", arrival_s=12.0)
    buffer.add(6.0, "e", arrival_s=12.0)
    assert len(buffer) == 3 and [item for _, item in buffer.within(1.0, 0.02)] == ["c"]  # bounded: "b" went


def test_latest_slot_keeps_only_the_newest_and_counts_drops() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert not slot.put(1)
    assert slot.put(2) and slot.put(3)
    assert slot.take(0.0) == 3 and slot.dropped == 2
    assert slot.take(0.01) is None


def test_latest_slot_wakes_a_waiting_worker_and_close_releases_it() -> None:
    slot: LatestSlot[str] = LatestSlot()
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: got.append(slot.take(5.0)))
    worker.start()
    time.sleep(0.05)
    slot.put("frame")
    worker.join(2.0)
    assert got == ["frame"]
    waiter = threading.Thread(target=lambda: got.append(slot.take(5.0)))
    waiter.start()
    slot.close()
    waiter.join(2.0)
    assert not waiter.is_alive() and got[-1] is None and slot.closed


def test_an_image_still_waiting_for_camera_info_is_dropped_once_a_newer_one_is_released() -> None:
    """Releasing it later would publish results that go back in time (seen as out-of-order results)."""
    pairer: StampPairer[str, str] = StampPairer(slop_s=0.01, timeout_s=0.2)
    assert pairer.add_image(1.0, "img1", arrival_s=0.0) == []  # its CameraInfo is late
    assert pairer.add_info(2.0, "info2") == []
    assert pairer.add_image(2.0, "img2", arrival_s=0.01) == [("img2", "info2")]
    assert pairer.superseded_dropped == 1
    assert pairer.add_info(1.0, "info1") == []  # too late: img1 is gone
    assert pairer.expire(10.0, require_info=False) == []
    # a newer image released through add_info supersedes older waiting ones too
    pairer.add_image(3.0, "img3", arrival_s=1.0)
    pairer.add_image(4.0, "img4", arrival_s=1.0)
    assert pairer.add_info(4.0, "info4") == [("img4", "info4")] and pairer.superseded_dropped == 2
    # an older image released alone never overtakes: nothing newer is pending
    pairer.add_image(5.0, "img5", arrival_s=2.0)
    assert pairer.expire(2.5, require_info=False) == [("img5", None)]
