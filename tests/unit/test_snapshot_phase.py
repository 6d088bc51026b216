"""Snapshots every 50 versions, each stream at its own phase: streams that move together do not
all snapshot in the same batch."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

from domain.app.billing_app import snapshot_due


def test_each_stream_snapshots_once_every_interval() -> None:
    for stream in ("sub-00001", "sub-xyz", ""):
        due = [v for v in range(1, 501) if snapshot_due(stream, v, 50)]
        assert len(due) == 10
        assert all(b - a == 50 for a, b in pairwise(due))


def test_streams_moving_in_step_spread_their_snapshots() -> None:
    streams = [f"sub-{i:05d}" for i in range(1_000)]
    per_version = Counter(v for s in streams for v in range(1, 51) if snapshot_due(s, v, 50))
    assert sum(per_version.values()) == 1_000  # each stream once in any 50 versions
    assert len(per_version) == 50
    assert max(per_version.values()) <= 3 * 1_000 // 50  # not all at the same version
