"""Workers report their own peak memory, not the peak of the process that spawned them."""

from __future__ import annotations

import multiprocessing
import sys

import pytest

from infra.ops.memory import peak_rss_mib

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def _touch(mib: int) -> float:
    block = bytearray(mib * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # resident, not only reserved
    return peak_rss_mib()


def test_a_spawned_worker_reports_its_own_peak_not_its_parents() -> None:
    held = _touch(200)  # the parent's peak is now at least 200 MiB
    assert held >= 200
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        child = pool.apply(_touch, (20,))
    assert 20 <= child < held - 100  # getrusage's ru_maxrss would give the parent's figure


def test_a_process_that_is_gone_reports_nothing() -> None:
    process = multiprocessing.get_context("spawn").Process(target=_touch, args=(1,))
    process.start()
    process.join()
    assert process.pid is not None and peak_rss_mib(process.pid) == 0.0
