"""The XID catalog and NVML's event API through the fake: waits, timeouts, storms, lost GPUs."""

from __future__ import annotations

import threading
import time

import pynvml
import pytest

from glyph_guard.common.xid import ACTIONS, GpuXids, action_for, catalog
from glyph_guard.common.xid_watch import XidWatch
from glyph_guard_demo.testkit.fake_nvml import FakeDevice, FakeNvml
from glyph_guard_demo.testkit.support import wait_for


@pytest.mark.parametrize(
    ("xid", "action"),
    [
        (13, "restart_app"),
        (31, "restart_app"),
        (43, "restart_app"),
        (94, "restart_app"),
        (48, "reset_gpu"),
        (63, "reset_gpu"),
        (64, "reset_gpu"),
        (74, "reset_gpu"),
        (95, "reset_gpu"),
        (119, "reset_gpu"),
        (120, "reset_gpu"),
        (79, "reboot"),
        (92, "contact_support"),
        (9999, "unknown"),
    ],
)
def test_each_xid_action_class(xid: int, action: str) -> None:
    assert action_for(xid) == action


def test_the_shipped_catalog_names_only_known_actions() -> None:
    assert catalog() and set(catalog().values()) <= set(ACTIONS)


def test_the_most_demanding_action_holds_until_the_gpu_is_reacquired() -> None:
    xids = GpuXids().add(79, 10.0).add(45, 11.0).add(13, 12.0)
    assert (xids.last, xids.last_at, xids.required) == (13, 12.0, "reboot")
    assert xids.add(79, 13.0).counts == {79: 2, 45: 1, 13: 1}
    back = xids.reacquired()
    assert back.required is None and back.counts == xids.counts and back.last == 13
    assert back.add(13, 14.0).required == "restart_app"


def two() -> FakeNvml:
    return FakeNvml([FakeDevice("GPU-aaaa"), FakeDevice("GPU-bbbb")])


def test_a_wait_times_out_empty_and_an_event_ends_it_early() -> None:
    fake = two()
    watch = XidWatch(fake, clock=lambda: 1234.0)
    assert watch.poll(wait_ms=50) is True  # nothing came: a wait, not an error
    assert watch.xids == {}
    [events] = fake.event_sets
    assert events.waits == [0.05]
    threading.Timer(0.2, fake.xid, (1, 48)).start()
    started = time.monotonic()
    assert watch.poll(wait_ms=30_000)
    assert time.monotonic() - started < 25  # woken by the event, not the timeout
    assert watch.xids == {"GPU-bbbb": GpuXids({48: 1}, 48, 1234.0, "reset_gpu")}
    assert fake.init_calls == 1 and len(fake.event_sets) == 1  # the set is kept


def test_a_storm_is_drained_without_waiting_again_and_bounded() -> None:
    fake = two()
    watch = XidWatch(fake)
    watch.poll(wait_ms=0)
    for _ in range(100):
        fake.xid(0, 31)
    fake.xid(1, 79)
    assert watch.poll(wait_ms=1000)
    [events] = fake.event_sets
    assert events.waits[1:] == [1.0] + [0.0] * 63  # one wait, then drained at once, bounded
    assert watch.xids["GPU-aaaa"].counts == {31: 64}
    watch.poll(wait_ms=0)
    assert watch.xids["GPU-aaaa"].counts == {31: 100}
    assert watch.xids["GPU-bbbb"].required == "reboot"


def test_a_gpu_lost_while_waiting_ends_the_wait_and_stays_its_own() -> None:
    fake = two()
    watch = XidWatch(fake, rediscover_seconds=0)
    watch.poll(wait_ms=0)
    fake.xid(1, 79)
    watch.poll(wait_ms=0)
    threading.Timer(0.2, fake.lose, (1,)).start()
    started = time.monotonic()
    watch.poll(wait_ms=30_000)
    assert time.monotonic() - started < 25
    assert fake.event_sets == []  # the session ended and freed its set
    watch.poll(wait_ms=0)  # initialised afresh: the lost GPU is left out, the other watched
    assert watch.lost == {"GPU-bbbb"}
    threading.Timer(0.2, fake.xid, (0, 43)).start()
    watch.poll(wait_ms=30_000)
    assert watch.xids["GPU-aaaa"].counts == {43: 1}
    assert watch.xids["GPU-bbbb"].required == "reboot"
    fake.devices[1].lost = False  # reset: it answers again
    watch.poll(wait_ms=0)
    watch.poll(wait_ms=0)
    assert watch.lost == frozenset()
    assert watch.xids["GPU-bbbb"].required is None and watch.xids["GPU-bbbb"].last == 79


def test_devices_without_xid_events_are_left_out_alone() -> None:
    fake = two()
    fake.devices[0].failures["nvmlDeviceRegisterEvents"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    watch = XidWatch(fake)
    assert watch.poll(wait_ms=0)
    fake.xid(0, 48)
    fake.xid(1, 48)
    watch.poll(wait_ms=0)
    assert set(watch.xids) == {"GPU-bbbb"}
    fake.devices[1].failures["nvmlDeviceRegisterEvents"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    nothing = XidWatch(fake)
    assert nothing.poll(wait_ms=0) is False  # nothing to wait on: the caller waits instead
    assert XidWatch(None).poll() is False
    assert XidWatch(FakeNvml([], library=False)).poll() is False


def test_the_thread_records_events_and_stops_promptly() -> None:
    fake = two()
    watch = XidWatch(fake)
    watch.start()
    try:
        wait_for(lambda: fake.event_sets, 10)
        fake.xid(0, 119)
        wait_for(lambda: "GPU-aaaa" in watch.xids, 10)
    finally:
        started = time.monotonic()
        watch.stop()
    assert time.monotonic() - started < 5  # one wait's bound
    assert watch.xids["GPU-aaaa"].required == "reset_gpu"
    assert fake.references == 0  # its session shut down what it initialised


def test_the_only_gpu_lost_is_looked_for_again_and_found() -> None:
    fake = FakeNvml([FakeDevice("GPU-aaaa")])
    watch = XidWatch(fake, rediscover_seconds=0)
    watch.poll(wait_ms=0)
    fake.xid(0, 79)
    watch.poll(wait_ms=0)
    fake.lose(0)
    watch.poll(wait_ms=0)
    assert watch.poll(wait_ms=0) is False  # nothing left to wait on
    assert watch.lost == {"GPU-aaaa"}
    fake.devices[0].lost = False
    assert watch.poll(wait_ms=0) is True
    assert watch.lost == frozenset() and watch.xids["GPU-aaaa"].required is None
