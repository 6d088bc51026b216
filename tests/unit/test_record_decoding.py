"""The engine's record-batch decoder against kafka-python's own, record by record: same records,
same offsets and counters, same errors."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
from kafka.structs import TopicPartition

from infra.kafka import kafka_python_internals, record_batches

TP = TopicPartition("billing.usage", 3)
Record = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]


def batch_bytes(base_offset: int, records: list[Record], compression: int = 0,
                log_append_time: bool = False) -> bytes:
    builder = MemoryRecordsBuilder(magic=2, compression_type=compression, batch_size=1 << 22)
    for timestamp, key, value, headers in records:
        builder.append(timestamp, key, value, headers)
    builder.close()
    buffer = bytearray(builder.buffer())
    struct.pack_into(">q", buffer, 0, base_offset)
    if log_append_time:  # attributes bit 3; the CRC covers the attributes onwards
        attributes = struct.unpack_from(">h", buffer, 21)[0] | 0x08
        struct.pack_into(">h", buffer, 21, attributes)
        from kafka.record.util import calc_crc32c
        struct.pack_into(">I", buffer, 17, calc_crc32c(memoryview(buffer)[21:]))
    return bytes(buffer)


def decode(data: bytes, fast: bool, fetch_offset: int = 0, take: int | None = None
           ) -> tuple[list[Any], int, int, int]:
    (kafka_python_internals.install if fast else kafka_python_internals.uninstall)()
    try:
        records = Fetcher.PartitionRecords(fetch_offset, TP, MemoryRecords(data))
        out: list[Any] = []
        while records:
            got = records.take(take)
            if not got:
                break
            out.extend(got)
        return out, records.next_fetch_offset, records.records_read, records.bytes_read
    finally:
        kafka_python_internals.install()


def both(data: bytes, **kw: Any) -> Iterator[tuple[list[Any], int, int, int]]:
    yield decode(data, fast=False, **kw)
    yield decode(data, fast=True, **kw)


headers_st = st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)),
                      max_size=2)
record_st = st.tuples(st.integers(1_600_000_000_000, 1_900_000_000_000),
                      st.none() | st.binary(max_size=40), st.none() | st.binary(max_size=300),
                      headers_st)


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(st.lists(record_st, min_size=1, max_size=30), min_size=1, max_size=4),
       fetch_skip=st.integers(0, 5), take=st.none() | st.integers(1, 7))
def test_same_records_offsets_and_counters_as_kafka_python(
        batches: list[list[Record]], fetch_skip: int, take: int | None) -> None:
    data, offset = b"", 1000
    for records in batches:
        data += batch_bytes(offset, records)
        offset += len(records)
    slow, fast = both(data, fetch_offset=1000 + fetch_skip, take=take)
    assert fast == slow
    assert [r.offset for r in fast[0]] == list(range(1000 + fetch_skip, offset))


def test_a_typical_usage_batch_decodes_to_its_keys_values_and_timestamps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plain_batches: list[int] = []
    decode_plain_batch = kafka_python_internals.decode_plain_batch

    def counted(self: Any, batch: Any, topic: str, partition: int) -> Iterator[Any]:
        plain_batches.append(batch.base_offset)
        return decode_plain_batch(self, batch, topic, partition)

    monkeypatch.setattr(kafka_python_internals, "decode_plain_batch", counted)
    records: list[Record] = [(1_763_800_000_000 + i, f"sub-{i}".encode(),
                              b'{"id": "u-%d"}' % i, []) for i in range(200)]
    (out, next_offset, read, _), = [decode(batch_bytes(50, records), fast=True)]
    assert [(r.offset, r.key, r.value, r.timestamp) for r in out] == [
        (50 + i, f"sub-{i}".encode(), b'{"id": "u-%d"}' % i, 1_763_800_000_000 + i)
        for i in range(200)]
    assert (next_offset, read) == (250, 200)
    assert all(r.headers == [] and r.serialized_header_size == -1 for r in out)
    assert plain_batches == [50]


@pytest.mark.parametrize("kind", ["gzip", "log-append-time"])
def test_batches_off_the_plain_path_go_through_kafka_python(kind: str) -> None:
    records: list[Record] = [(1_763_800_000_000, b"k", b"v%d" % i, [("h", b"x")])
                             for i in range(20)]
    data = (batch_bytes(0, records, compression=DefaultRecordBatchBuilder.CODEC_GZIP)
            if kind == "gzip" else batch_bytes(0, records, log_append_time=True))
    data += batch_bytes(20, records)  # then a plain one
    slow, fast = both(data)
    assert fast == slow
    assert len(fast[0]) == 40


def test_a_record_whose_length_lies_is_refused_like_kafka_python() -> None:
    records: list[Record] = [(1_763_800_000_000, b"key", b"value-%d" % i, []) for i in range(3)]
    data = bytearray(batch_bytes(0, records))
    data[61] += 2  # the first record's length varint (zig-zag: +1)
    from kafka.record.util import calc_crc32c
    struct.pack_into(">I", data, 17, calc_crc32c(memoryview(data)[21:]))
    for fast in (False, True):
        with pytest.raises(CorruptRecordError):
            decode(bytes(data), fast=fast)


def test_a_batch_with_a_bad_crc_is_refused_like_kafka_python() -> None:
    data = bytearray(batch_bytes(0, [(1_763_800_000_000, b"k", b"v", [])]))
    data[-1] ^= 0xFF
    for fast in (False, True):
        with pytest.raises(CorruptRecordError, match="crc"):
            decode(bytes(data), fast=fast)


def builder_batches(records: list[tuple[bytes | None, bytes]], timestamp: int,
                    batch_bytes: int) -> list[tuple[bytes, int]]:
    """What kafka-python's MemoryRecordsBuilder writes for the same records."""
    out: list[tuple[bytes, int]] = []
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=batch_bytes)
    for key, value in records:
        if builder.append(timestamp, key, value, []) is None:
            builder.close()
            out.append((bytes(builder.buffer()), builder.next_offset()))
            builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=batch_bytes)
            assert builder.append(timestamp, key, value, []) is not None
    builder.close()
    out.append((bytes(builder.buffer()), builder.next_offset()))
    return out


@settings(max_examples=150, deadline=None)
@given(records=st.lists(st.tuples(st.none() | st.binary(max_size=80),
                                  st.binary(max_size=20_000)), min_size=1, max_size=120),
       batch_bytes=st.sampled_from([1 << 20, 4_000, 600]))
def test_encoded_batches_are_byte_for_byte_kafka_pythons(
        records: list[tuple[bytes | None, bytes]], batch_bytes: int) -> None:
    timestamp = 1_763_800_000_123
    encoded = record_batches.encode_plain_batches(records, timestamp, batch_bytes)
    assert encoded == builder_batches(records, timestamp, batch_bytes)
    decoded = decode(b"".join(batch for batch, _ in encoded), fast=True)[0]
    assert [(r.key, r.value, r.timestamp) for r in decoded] == [
        (k, v, timestamp) for k, v in records]
