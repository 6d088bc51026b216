"""The fault suite (CI size): kills, a broker pause and a database restart while a known stream
flows; every figure afterwards equals the one computed from the input. `bench/soak.py` runs the
same scenario at soak size."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.chaos import Size, run_scenario

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_nothing_lost_or_double_counted_under_kills_pauses_and_restarts(tmp_path: Path) -> None:
    size = Size(events=12_000, subscriptions=24, kills=10, pauses=1, restarts=1)
    report, problems = run_scenario(size, seed=7, workdir=tmp_path)
    print("fault suite:", report.line())
    assert sum(report.kills.values()) == 10 and report.pauses == 1 and report.restarts == 1
    assert problems == [], problems
