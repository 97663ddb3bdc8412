"""CPU time by kind of thread (notefly.threads)."""

from __future__ import annotations

import sys
import threading

import pytest

from notefly.threads import ThreadCpu, named_threads, proc_cpu_seconds, thread_kind


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("shard-email-0", "shard-email"),
        ("shard-email-11", "shard-email"),
        ("CategoryActor-3", "CategoryActor"),
        ("asyncio_0", "asyncio"),
        ("Thread-4 (_connection_worker_thread)", "_connection_worker_thread"),
        ("MainThread", "MainThread"),
        ("sqlite-writer", "sqlite-writer"),
        ("-1", "-1"),
    ],
)
def test_a_thread_s_kind_is_its_name_without_its_counter(name: str, kind: str) -> None:
    assert thread_kind(name) == kind


class FakeThreads:
    def __init__(self) -> None:
        self.cpu: dict[int, float] = {}
        self.names: dict[int, str] = {}

    def start(self, native_id: int, name: str, seconds: float = 0.0) -> None:
        self.names[native_id], self.cpu[native_id] = name, seconds

    def end(self, native_id: int) -> None:
        del self.names[native_id], self.cpu[native_id]

    def read(self, native_id: int) -> float | None:
        return self.cpu.get(native_id)

    def threads(self) -> list[tuple[int, str]]:
        return list(self.names.items())


def test_threads_of_one_kind_add_up_and_keep_counting_once_they_end() -> None:
    fake = FakeThreads()
    cpu = ThreadCpu(fake.read, fake.threads)
    fake.start(1, "MainThread", 1.0)
    fake.start(2, "shard-sms-0", 0.5)
    fake.start(3, "shard-sms-1", 0.25)
    assert cpu.totals() == {"MainThread": 1.0, "shard-sms": 0.75}

    fake.cpu[2] = 0.75
    fake.end(3)  # its last reading (0.25) stays counted
    assert cpu.totals() == {"MainThread": 1.0, "shard-sms": 1.0}

    fake.start(3, "shard-sms-2", 0.125)  # a new thread that got the id of the one that ended
    assert cpu.totals() == {"MainThread": 1.0, "shard-sms": 1.125}
    fake.end(2)
    fake.end(3)
    assert cpu.totals() == {"MainThread": 1.0, "shard-sms": 1.125}


def test_a_thread_that_cannot_be_read_is_left_out() -> None:
    fake = FakeThreads()
    fake.names[7] = "gone-before-its-reading"
    assert ThreadCpu(fake.read, fake.threads).totals() == {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_the_kernel_s_figures_of_this_process_s_threads_are_read() -> None:
    me = threading.current_thread().native_id
    assert me in {native_id for native_id, _name in named_threads()}
    assert (proc_cpu_seconds(me) or 0.0) > 0
    assert proc_cpu_seconds(2**31 - 1) is None  # no such thread

    assert ThreadCpu().totals()["MainThread"] > 0  # this test's thread, which imported much
