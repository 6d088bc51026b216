"""Kafka clients with the settings this engine relies on, and idempotent topic creation."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    KafkaTimeoutError,
    LeaderNotAvailableError,
    NodeNotReadyError,
    TopicAlreadyExistsError,
    for_code,
)
from kafka.partitioner import murmur2
from kafka.protocol.producer import ProduceRequest

from consumers.loop import partitions_of
from infra.config import Settings
from infra.kafka import kafka_python_internals, record_batches

log = logging.getLogger(__name__)


class BrokerUnreachable(KafkaTimeoutError):  # type: ignore[misc]
    """No broker answered, with the reason kafka-python gave in its log (a TLS certificate
    refused, SASL authentication failed, nothing listening) in the message."""


class _KafkaWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.messages.append(record.getMessage())


@contextlib.contextmanager
def reasons_for(bootstrap: str, options: dict[str, Any] | None) -> Iterator[None]:
    """Turn kafka-python's "Unable to bootstrap" / NoBrokersAvailable into BrokerUnreachable
    naming the broker, the security protocol and the last reason kafka-python logged (it
    keeps them out of the exception)."""
    handler = _KafkaWarnings()
    kafka_log = logging.getLogger("kafka")
    kafka_log.addHandler(handler)
    try:
        yield
    except KafkaTimeoutError as e:
        if isinstance(e, BrokerUnreachable):
            raise
        known = [m for m in handler.messages if any(
            word in m for word in ("CERTIFICATE", "SSL", "Sasl", "SASL", "uthenticat",
                                   "refused", "Connect"))]
        reason = re.sub(r"^<[^>]*>:\s*", "",  # the connection object's repr
                        (known or handler.messages or [str(e)])[-1].strip())
        protocol = (options or {}).get("security_protocol", "PLAINTEXT")
        raise BrokerUnreachable(
            f"no Kafka broker answered at {bootstrap} over {protocol}: {reason[:300]} (check "
            f"BILLING_KAFKA_BOOTSTRAP and the BILLING_KAFKA_* security settings)") from e
    finally:
        kafka_log.removeHandler(handler)


def admin(bootstrap: str, options: dict[str, Any] | None = None) -> KafkaAdminClient:
    with reasons_for(bootstrap, options):
        return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="billing-admin",
                                **(options or {}))


def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int,
                  options: dict[str, Any] | None = None) -> None:
    """Create missing topics; existing ones are left as they are. `options`: the clients'
    SASL/TLS settings (Settings.kafka_options)."""
    from kafka.admin import NewTopic

    client = admin(bootstrap, options)
    try:
        wanted = list(topics)
        existing = set(client.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                client.create_topics(
                    [NewTopic(name=t, num_partitions=partitions, replication_factor=1)
                     for t in missing]
                )
        _wait_for_metadata(bootstrap, wanted, options)
    finally:
        client.close()


def _wait_for_metadata(bootstrap: str, topics: list[str],
                       options: dict[str, Any] | None = None, timeout: float = 30) -> None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             **(options or {}))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(consumer.partitions_for_topic(t) for t in topics):
                return
            time.sleep(0.1)
        raise TimeoutError(f"topics not visible after {timeout}s: {topics}")
    finally:
        consumer.close()


def producer(bootstrap: str, settings: Settings | None = None,
             **overrides: Any) -> KafkaProducer:
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "retries": 10,
        "client_id": "billing-producer",
    }
    if settings is not None:
        config.update(settings.kafka_options)  # SASL/TLS, timeouts
    config.update(overrides)
    with reasons_for(bootstrap, config):
        return KafkaProducer(**config)


def consumer(bootstrap: str, settings: Settings, **overrides: Any) -> KafkaConsumer:
    """A consumer whose positions live in PostgreSQL: auto-commit is off, offsets never
    committed to the broker. Fetched batches are decoded by `infra.kafka.kafka_python_internals`."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": settings.max_poll_records,
        "fetch_max_bytes": 64 * 1024 * 1024,
        "max_partition_fetch_bytes": 16 * 1024 * 1024,
        "session_timeout_ms": settings.session_timeout_ms,
        # A fetch waits for `fetch_min_bytes` (about a hundred usage events) or 50 ms,
        # whichever comes first. A trickle then makes one batch (one transaction, one relay
        # and projection round) per 50 ms rather than one per record or two: at 200 usage
        # events/s that took the ingester from 0.43 to 0.14 cores and the whole pipeline from
        # 1.2 to about 0.6 (docs/BENCHMARKS.md, HTTP API). Busy topics fill the bytes at once;
        # the wait bounds what a quiet one adds to latency (kafka-python's default is 500 ms).
        "fetch_max_wait_ms": 50,
        "fetch_min_bytes": settings.fetch_min_bytes,
        "heartbeat_interval_ms": max(settings.session_timeout_ms // 3, 500),
        "client_id": "billing-consumer",
    }
    config.update(settings.kafka_options)  # SASL/TLS, timeouts
    config.update(overrides)
    kafka_python_internals.install()
    with reasons_for(bootstrap, config):
        return KafkaConsumer(**config)


class KeyPartitions:
    """The partition kafka-python's default partitioner picks for a key (murmur2 of the key
    over the sorted partitions), remembered per key. Its pure-Python murmur2 on every message
    was a fifth of the relay's CPU. `refresh()` (once per batch) forgets everything when the
    topic's partition count changes, as the default partitioner's mapping would."""

    def __init__(self, partitions: Callable[[], Iterable[int] | None], limit: int = 200_000):
        self._partitions = partitions
        self._sorted: list[int] = []
        self._cache: dict[bytes, int] = {}
        self._limit = limit

    def refresh(self) -> None:
        current = sorted(self._partitions() or ())
        if current != self._sorted:
            self._sorted = current
            self._cache.clear()

    def __call__(self, key: bytes) -> int | None:
        """None while the topic's partitions are unknown (the producer then decides)."""
        found = self._cache.get(key)
        if found is None:
            if not self._sorted:
                self.refresh()
                if not self._sorted:
                    return None
            if len(self._cache) >= self._limit:
                self._cache.clear()
            found = self._cache[key] = \
                self._sorted[(murmur2(key) & 0x7FFFFFFF) % len(self._sorted)]
        return found


class RecordBatches:
    """Publishes a whole batch of records at once: one record batch per partition (split at
    `batch_bytes`) and one produce request per broker, sent over a KafkaProducer's connections
    (its sender thread does the I/O) and awaited. kafka-python's per-record `send()` (futures,
    the accumulator, a wake-up per new batch) cost about 40-70 µs a record in Python: the
    relay's and the load generator's largest cost. The batches are encoded directly
    (`infra.kafka.record_batches.encode_plain_batches`, about 1 µs a record).

    All or nothing from the caller's view: any error raises, and the caller publishes the batch
    again (the relay does, from its recorded position; duplicates are skipped downstream by
    version). A request that timed out may still land, so a retry can duplicate, never lose."""

    def __init__(self, producer: KafkaProducer, batch_bytes: int = 1024 * 1024,
                 timeout: float = 30.0) -> None:
        self.producer = producer
        self.batch_bytes = batch_bytes
        self.timeout = timeout
        acks = producer.config["acks"]
        self.acks = -1 if acks == "all" else int(acks)

    def publish(self, topic: str, records: Sequence[tuple[int, bytes | None, bytes]]
                ) -> dict[int, int]:
        """`records`: (partition, key, value), in order per partition. Returns each partition's
        end offset (last offset + 1) as acknowledged."""
        if not records:
            return {}
        self.producer.partitions_for(topic)  # metadata known (waits for it the first time)
        chunks = record_batches.encode_by_partition(records, int(time.time() * 1000),
                                                     self.batch_bytes)
        ends: dict[int, int] = {}
        for round_ in range(max(len(b) for b in chunks.values())):
            wanted = {p: b[round_] for p, b in chunks.items() if round_ < len(b)}
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    ends.update(self._send_round(topic, wanted))
                    break
                except (NodeNotReadyError, LeaderNotAvailableError):
                    # Refused before sending (a connection at its in-flight limit or still
                    # connecting, metadata on its way): try again shortly.
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        return ends

    def _send_round(self, topic: str, batches: dict[int, tuple[bytes, int]]
                    ) -> dict[int, int]:
        """`batches`: partition -> (record batch, its record count)."""
        by_leader: dict[int, list[tuple[int, bytes]]] = {}
        for partition, (batch, _count) in batches.items():
            leader = kafka_python_internals.partition_leader(self.producer,
                                                             TopicPartition(topic, partition))
            if leader is None or leader < 0:
                kafka_python_internals.request_metadata_update(self.producer)
                raise LeaderNotAvailableError(f"{topic}:{partition} has no leader yet")
            by_leader.setdefault(leader, []).append((partition, batch))
        topic_data = ProduceRequest.TopicProduceData
        partition_data = topic_data.PartitionProduceData
        waits = []
        for leader, parts in by_leader.items():
            request = ProduceRequest(
                transactional_id=None, acks=self.acks, timeout_ms=int(self.timeout * 1000),
                topic_data=[topic_data(name=topic, partition_data=[
                    partition_data(index=p, records=b) for p, b in parts])],
                min_version=0, max_version=9)
            waits.append(kafka_python_internals.send_on_io_loop(self.producer, leader, request))
        counts = {p: count for p, (_batch, count) in batches.items()}
        ends: dict[int, int] = {}
        for done, sent in waits:
            if not done.wait(self.timeout):
                raise KafkaTimeoutError(f"no produce response from {topic} in {self.timeout}s")
            response = sent[0]
            if response.failed():
                raise response.exception
            for topic_response in response.value.responses:
                for part in topic_response.partition_responses:
                    if part.error_code:
                        raise for_code(part.error_code)(f"{topic}:{part.index}")
                    ends[part.index] = part.base_offset + counts[part.index]
        return ends


def publish(producer: KafkaProducer, topic: str,
            messages: Iterable[tuple[bytes | None, bytes]]) -> dict[int, int]:
    """Send and flush; returns each partition's end offset (last offset + 1) as acknowledged.

    The end offsets come from the produce acknowledgements, not from ListOffsets: the Tansu
    broker answers ListOffsets(latest) with the base offset of the last record batch, which is
    short of the real end (measured: 198,893 reported for 200,000 stored records)."""
    partition_of = KeyPartitions(lambda: producer.partitions_for(topic))
    futures = [producer.send(topic, key=key, value=value,
                             partition=partition_of(key) if key is not None else None)
               for key, value in messages]
    producer.flush()
    ends: dict[int, int] = {}
    for future in futures:
        meta = future.get(timeout=30)
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    return ends



def broker_reachable(bootstrap: str, topics: list[str], timeout_ms: int = 3000,
                     options: dict[str, Any] | None = None) -> bool:
    """The broker answers a metadata request within `timeout_ms` and has these topics;
    `options`: the deployment's SASL/TLS settings."""
    config = {**(options or {}), "request_timeout_ms": timeout_ms}

    def probe() -> bool:
        client = KafkaConsumer(bootstrap_servers=bootstrap, **config)
        try:
            return set(topics) <= set(client.topics())
        finally:
            client.close()

    try:
        return bool(_within(probe, timeout_ms / 1000))
    except Exception:
        return False


def _within(call: Callable[[], Any], seconds: float) -> Any:
    """`call()` in a daemon thread, abandoned with TimeoutError after `seconds`: a client
    call may block past its own request timeout (a broker paused mid-answer)."""
    result: list[Any] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as e:
            failure.append(e)

    worker = threading.Thread(target=run, daemon=True, name="broker-probe")
    worker.start()
    worker.join(seconds + 1)
    if failure:
        raise failure[0]
    if not result:
        raise TimeoutError(f"the broker did not answer within {seconds + 1:.0f}s")
    return result[0]


def read_from_start(bootstrap: str, settings: Settings, topic: str, client_id: str,
                    quiet_seconds: float = 1.5) -> list[Any]:
    """Every record of `topic` from offset 0. The broker's end offsets are not trusted (see
    `publish`): read until nothing came for `quiet_seconds`."""
    client = consumer(bootstrap, settings, client_id=client_id)
    try:
        parts = partitions_of(client, topic)
        client.assign(parts)
        client.seek_to_beginning(*parts)
        records: list[Any] = []
        deadline = time.monotonic() + quiet_seconds
        while time.monotonic() < deadline:
            for batch in client.poll(timeout_ms=200).values():
                records.extend(batch)
                deadline = time.monotonic() + quiet_seconds
        return records
    finally:
        client.close()
