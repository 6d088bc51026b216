"""A faster decoder for the record batches a consumer fetches, and a faster encoder for the
batches the relay and the load generator publish.

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
from collections.abc import Iterator, Sequence
from typing import Any

from kafka.consumer import fetcher as _fetcher
from kafka.errors import CorruptRecordError, KafkaError
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import calc_crc32c

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


# ------------------------------------------------------------------------------ encoding --

_NULL = b"\x01"  # length -1, zig-zag encoded


def _encode_varint(value: int) -> bytes:
    v = (value << 1) ^ (value >> 63)  # zig-zag
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


# Lengths and offset deltas under 8,192 take one or two bytes: from a table (about 300 KiB).
_SMALL_VARINTS = [_encode_varint(v) for v in range(8192)]


def _varint_bytes(value: int) -> bytes:
    """A zig-zag varint."""
    return _SMALL_VARINTS[value] if 0 <= value < 8192 else _encode_varint(value)


def encode_plain_batches(records: list[tuple[bytes | None, bytes]], timestamp_ms: int,
                         batch_bytes: int) -> list[tuple[bytes, int]]:
    """(key, value) records as v2 record batches, uncompressed, every record stamped
    `timestamp_ms`, base offset 0, no producer id: what kafka-python's `MemoryRecordsBuilder`
    writes (the tests compare them byte for byte), in one loop instead of a method call and
    varint encodings per record: about 1 instead of 5 µs a record. A batch is closed before
    it would exceed `batch_bytes` (a record larger than that goes alone in its batch).
    Returns (batch, its record count) pairs."""
    header = DefaultRecordBatch.HEADER_STRUCT
    batches: list[tuple[bytes, int]] = []
    parts: list[bytes] = []
    size = header.size
    count = 0
    varint = _varint_bytes
    for key, value in records:
        key_part = _NULL if key is None else varint(len(key)) + key
        # attributes 0, timestamp delta 0, offset delta, key, value, no headers
        body = b"".join((b"\x00\x00", varint(count), key_part, varint(len(value)), value,
                         b"\x00"))
        record = varint(len(body)) + body
        if count and size + len(record) > batch_bytes:
            batches.append((_close_batch(parts, count, size, timestamp_ms), count))
            parts, size, count = [], header.size, 0
            body = b"".join((b"\x00\x00\x00", key_part, varint(len(value)), value, b"\x00"))
            record = varint(len(body)) + body
        parts.append(record)
        size += len(record)
        count += 1
    if count:
        batches.append((_close_batch(parts, count, size, timestamp_ms), count))
    return batches


def encode_by_partition(records: Sequence[tuple[int, bytes | None, bytes]], timestamp_ms: int,
                        batch_bytes: int) -> dict[int, list[tuple[bytes, int]]]:
    """(partition, key, value) records, in order per partition, as each partition's record
    batches (`encode_plain_batches`)."""
    by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
    for partition, key, value in records:
        by_partition.setdefault(partition, []).append((key, value))
    return {partition: encode_plain_batches(pairs, timestamp_ms, batch_bytes)
            for partition, pairs in by_partition.items()}


def _close_batch(parts: list[bytes], count: int, size: int, timestamp_ms: int) -> bytes:
    header = DefaultRecordBatch.HEADER_STRUCT
    buffer = bytearray(header.size)
    # base offset, length after it, leader epoch, magic, crc (below), attributes, last offset
    # delta, first and max timestamps, producer id, epoch, base sequence, record count
    header.pack_into(buffer, 0, 0, size - 12, 0, 2, 0, 0, count - 1, timestamp_ms,
                     timestamp_ms, -1, -1, -1, count)
    buffer += b"".join(parts)
    crc = calc_crc32c(memoryview(buffer)[DefaultRecordBatch.ATTRIBUTES_OFFSET:])
    struct.pack_into(">I", buffer, DefaultRecordBatch.CRC_OFFSET, crc)
    return bytes(buffer)
