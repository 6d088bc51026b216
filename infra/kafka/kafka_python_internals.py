"""Every reach of the engine into kafka-python's private internals, on the exact version
pinned in pyproject.toml (tests/unit/test_pinned_internals.py fails on any other).

1. A faster decoder for the record batches a consumer fetches, swapped in for
   `Fetcher.PartitionRecords._unpack_records` and keeping that object's counters.
2. The producer's metadata and I/O loop, to send the relay's own produce requests
   (`partition_leader`, `request_metadata_update`, `send_on_io_loop`).

kafka-python decodes each record of a v2 batch through a `DefaultRecord` object, a call per
varint and a `ConsumerRecord` built from its properties: 14.4 µs a record on this machine,
about a third of the ingester's CPU and a sixth of the projector's (docs/scaling.md). The
plain case is most batches: format v2, uncompressed, not a control batch, timestamps set by
the producer, no deserializers, read uncommitted. `install()` swaps in a generator that decodes
such a batch in one loop and yields the same `ConsumerRecord`s with the same offsets, counts
and errors; any other batch, and any other consumer configuration, goes through kafka-python's
own code. The swap is made once per process, on the exact kafka-python version pinned in
pyproject.toml (the tests compare both decoders record by record).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from typing import Any

from kafka.consumer import fetcher as _fetcher
from kafka.errors import CorruptRecordError, KafkaError
from kafka.record.default_records import DefaultRecordBatch

ConsumerRecord = _fetcher.ConsumerRecord
_READ_UNCOMMITTED = _fetcher.IsolationLevel.READ_UNCOMMITTED
_PartitionRecords = _fetcher.Fetcher.PartitionRecords
_original_unpack = _PartitionRecords._unpack_records
_HEADER_SIZE = DefaultRecordBatch.HEADER_STRUCT.size
_PLAIN_ATTRIBUTES_MASK = (DefaultRecordBatch.CODEC_MASK | DefaultRecordBatch.CONTROL_MASK
                          | DefaultRecordBatch.TIMESTAMP_TYPE_MASK)


def _varint(buffer: bytes | bytearray, pos: int) -> tuple[int, int]:
    """A zig-zag varint at `pos`: (value, position after it)."""
    byte = buffer[pos]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    value, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = buffer[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), pos + 1
        shift += 7
        if shift > 63:
            raise CorruptRecordError("a varint longer than 10 bytes")


def decode_plain_batch(self: Any, batch: DefaultRecordBatch, topic: str, partition: int
                       ) -> Iterator[Any]:
    """The records of a plain batch, checked as kafka-python checks them; keeps the
    `PartitionRecords` counters and next offset as kafka-python does, record by record."""
    buffer = batch._buffer
    end = len(buffer)
    pos = _HEADER_SIZE
    base_offset, first_timestamp = batch.base_offset, batch.first_timestamp
    leader_epoch, timestamp_type = batch.leader_epoch, batch.timestamp_type
    varint, new = _varint, tuple.__new__
    try:
        for _ in range(batch.records_count):
            length, pos = varint(buffer, pos)
            start = pos
            pos += 1  # attributes: one byte, unused in v2
            ts_delta, pos = varint(buffer, pos)
            offset_delta, pos = varint(buffer, pos)
            key_len, pos = varint(buffer, pos)
            if key_len >= 0:
                key: bytes | None = bytes(buffer[pos:pos + key_len])
                pos += key_len
            else:
                key = None
            value_len, pos = varint(buffer, pos)
            if value_len >= 0:
                value: bytes | None = bytes(buffer[pos:pos + value_len])
                pos += value_len
            else:
                value = None
            headers: list[tuple[str, bytes | None]] = []
            if buffer[pos] == 0:  # no headers, the usual case
                pos += 1
                header_size = -1
            else:
                headers, header_size, pos = _headers(buffer, pos)
            if pos - start != length or pos > end:
                raise CorruptRecordError(
                    f"Invalid record size: expected to read {length} bytes in record "
                    f"payload, but instead read {pos - start}")
            offset = base_offset + offset_delta
            self.records_read += 1
            self.bytes_read += length
            self.next_fetch_offset = offset + 1
            yield new(ConsumerRecord, (
                topic, partition, leader_epoch, offset, first_timestamp + ts_delta,
                timestamp_type, key, value, headers, None, -1 if key is None else key_len,
                -1 if value is None else value_len, header_size))
    except (ValueError, IndexError) as err:
        raise CorruptRecordError(f"Found invalid record structure: {err!r}") from err
    if pos != end:
        raise CorruptRecordError(f"{end - pos} unconsumed bytes after all records consumed")


def _headers(buffer: bytes | bytearray, pos: int
             ) -> tuple[list[tuple[str, bytes | None]], int, int]:
    """A record's headers at `pos`: (headers, their size as kafka-python counts it, position
    after them)."""
    header_count, pos = _varint(buffer, pos)
    if header_count < 0:
        raise CorruptRecordError(f"Found invalid number of record headers {header_count}")
    headers: list[tuple[str, bytes | None]] = []
    size = 0
    for _ in range(header_count):
        key_len, pos = _varint(buffer, pos)
        if key_len < 0:
            raise CorruptRecordError(f"Invalid negative header key size {key_len}")
        key = buffer[pos:pos + key_len].decode("utf-8")
        pos += key_len
        value_len, pos = _varint(buffer, pos)
        value: bytes | None = None
        if value_len >= 0:
            value = bytes(buffer[pos:pos + value_len])
            pos += value_len
        headers.append((key, value))
        size += len(key.encode("utf-8")) + len(value or b"")
    return headers, (size if headers else -1), pos


class UndecodableBatch(CorruptRecordError):  # type: ignore[misc]
    """A fetched record batch that cannot be decoded (corrupt, or compressed with a codec this
    process cannot read). kafka-python would leave its partition's records undrained and spin
    on them at every poll; here they are drained first, and the error names the partition and
    offsets so the consumer loop can dead-letter the batch and move past it."""

    def __init__(self, tp: Any, first: int, last: int, raw: bytes, cause: Exception) -> None:
        super().__init__(f"record batch {tp.topic}:{tp.partition}@{first}..{last} cannot be "
                         f"decoded: {type(cause).__name__}: {cause}")
        self.topic_partition, self.first, self.last, self.raw = tp, first, last, raw


def _unpack_records(self: Any, tp: Any, records: Any, key_deserializer: Any,
                    value_deserializer: Any) -> Iterator[Any]:
    try:
        yield from _unpack_decodable(self, tp, records, key_deserializer, value_deserializer)
    except UndecodableBatch:
        self.drain()
        raise


def _unpack_decodable(self: Any, tp: Any, records: Any, key_deserializer: Any,
                      value_deserializer: Any) -> Iterator[Any]:
    """kafka-python's `PartitionRecords._unpack_records`, with plain batches decoded by
    `decode_plain_batch`."""
    if (key_deserializer is not None or value_deserializer is not None
            or self.isolation_level != _READ_UNCOMMITTED):
        yield from _original_unpack(self, tp, records, key_deserializer, value_deserializer)
        return
    try:
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if batch.magic == 2:
                self.leader_epoch = batch.leader_epoch
                if batch.is_control_batch:
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
            try:
                yield from _decode_batch(self, batch, tp)
            except (KafkaError, ValueError, struct.error, OSError) as cause:
                raise UndecodableBatch(tp, max(batch.base_offset, self.next_fetch_offset),
                                       batch.last_offset if batch.magic == 2 else
                                       self.next_fetch_offset,
                                       bytes(batch._buffer[:64 * 1024]), cause) from cause
            batch = records.next_batch()
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = last_batch.next_offset
        self.drain()
    except StopIteration as stop:  # as kafka-python does: never end the generator silently
        raise RuntimeError("StopIteration raised unpacking messageset") from stop


def _decode_batch(self: Any, batch: Any, tp: Any) -> Iterator[Any]:
    """One batch's records (CorruptRecordError, or the codec's error, if it cannot be read)."""
    if self.check_crcs and not batch.validate_crc():
        raise CorruptRecordError(
            f"Record batch for partition {tp} at offset {batch.base_offset} failed crc check")
    topic, partition = tp.topic, tp.partition
    if batch.magic == 2 and not batch.attributes & _PLAIN_ATTRIBUTES_MASK:
        yield from decode_plain_batch(self, batch, topic, partition)
        return
    for record in batch:  # kafka-python's own decoding
        if self.check_crcs and not record.validate_crc():
            raise CorruptRecordError(
                f"Record for partition {tp} at offset {record.offset} failed crc check")
        headers = record.headers
        self.records_read += 1
        self.bytes_read += record.size_in_bytes
        self.next_fetch_offset = record.offset + 1
        yield ConsumerRecord(
            topic, partition, self.leader_epoch, record.offset, record.timestamp,
            record.timestamp_type, record.key, record.value, headers,
            record.checksum, -1 if record.key is None else len(record.key),
            -1 if record.value is None else len(record.value),
            sum(len(k.encode("utf-8")) + len(v or b"") for k, v in headers)
            if headers else -1)


def install() -> None:
    """Decode fetched batches with `_unpack_records` (idempotent)."""
    _PartitionRecords._unpack_records = _unpack_records


def uninstall() -> None:
    _PartitionRecords._unpack_records = _original_unpack


# ------------------------------------------------------------------- the producer's I/O --

def partition_leader(producer: Any, tp: Any) -> int | None:
    leader: int | None = producer._metadata.leader_for_partition(tp)
    return leader


def request_metadata_update(producer: Any) -> None:
    producer._metadata.request_update()


def send_on_io_loop(producer: Any, leader: int, request: Any) -> tuple[threading.Event, list[Any]]:
    """Hand the request to the producer's I/O loop (thread-safe scheduling) and wake it."""
    manager = producer._sender._client._manager
    done = threading.Event()
    sent: list[Any] = []

    def send() -> None:
        future = manager.send(request, node_id=leader)
        sent.append(future)
        future.add_both(lambda *_: done.set())

    manager.call_soon(send)
    producer._sender.wakeup()
    return done, sent
