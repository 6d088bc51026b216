"""The relay's remembered partitions are the ones kafka-python's default partitioner picks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner import DefaultPartitioner

from infra.kafka.clients import KeyPartitions


class _Cluster:
    """The three metadata questions the default partitioner asks."""

    def __init__(self, partitions: set[int]) -> None:
        self.partitions = partitions

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions


@settings(database=None, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=30),
       st.integers(1, 12))
def test_same_partition_as_the_default_partitioner(keys: list[bytes], count: int) -> None:
    partitions = set(range(count))
    cluster = _Cluster(partitions)
    remembered = KeyPartitions(lambda: partitions)
    for key in keys + keys:  # the second time from the cache
        assert remembered(key) == DefaultPartitioner().partition("t", key, key, None, None,
                                                                 cluster)


def test_a_new_partition_count_forgets_the_mapping() -> None:
    partitions = {0, 1}
    remembered = KeyPartitions(lambda: partitions)
    remembered.refresh()
    keys = [f"sub-{i}".encode() for i in range(50)]
    before = {k: remembered(k) for k in keys}
    assert set(before.values()) == {0, 1}
    partitions = {0, 1, 2, 3, 4}
    remembered.refresh()
    after = {k: remembered(k) for k in keys}
    assert max(after.values()) > 1
    assert after == {k: DefaultPartitioner().partition("t", k, k, None, None,
                                                       _Cluster(partitions)) for k in keys}


def test_unknown_partitions_leave_the_choice_to_the_producer() -> None:
    assert KeyPartitions(lambda: None)(b"sub-1") is None
