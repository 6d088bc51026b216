"""The latency bench's load generator publishes through a blocking produce client of its own.

The load generator stands for upstream services, which run elsewhere; here it shares the
engine's two cores. Through kafka-python, each produce request cost it about 1.4 ms of CPU in
the producer's network thread (four turns of its I/O loop a request), so ticking every 10 ms
took about a quarter of a core: CPU the engine under test did not get. This client writes the
same record batches (format v2, encoded as the relay encodes them) and the same produce
request (kafka-python's protocol classes) on a plain socket per partition leader, and reads
the acknowledgement. Plaintext only: with `BILLING_KAFKA_*` security settings the load
generator goes through kafka-python (`Publisher`).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError, for_code
from kafka.protocol.producer import ProduceRequest, ProduceResponse

from infra.config import Settings
from infra.kafka import clients as kafka
from infra.kafka import record_batches

Records = Sequence[tuple[int, bytes | None, bytes]]
_VERSION = 7  # record batches v2, not yet the flexible encoding; Kafka 2.1 and later


class PlainProduceClient:
    """Blocking produce of whole record batches, acks=all, one socket per leader broker."""

    def __init__(self, producer: KafkaProducer, topic: str, timeout: float = 30.0) -> None:
        self.topic = topic
        self.timeout = timeout
        metadata = producer._metadata
        self.leader: dict[int, int] = {}
        for partition in producer.partitions_for(topic):  # waits for the metadata
            leader = metadata.leader_for_partition(TopicPartition(topic, partition))
            if leader is None or leader < 0:
                raise KafkaError(f"{topic}:{partition} has no leader")
            self.leader[partition] = leader
        self.sockets: dict[int, socket.socket] = {}
        for node in set(self.leader.values()):
            broker = metadata.broker_metadata(node)
            sock = socket.create_connection((broker.host, broker.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sockets[node] = sock
        self.correlation = 0

    def publish(self, records: Records) -> None:
        by_leader: dict[int, list[tuple[int, bytes]]] = {}
        chunks = record_batches.encode_by_partition(records, int(time.time() * 1000), 1 << 30)
        for partition, ((batch, _count),) in chunks.items():  # one batch each: no size limit
            by_leader.setdefault(self.leader[partition], []).append((partition, batch))
        sent = []
        for node, parts in by_leader.items():
            self.correlation += 1
            topic_data = ProduceRequest.TopicProduceData
            request = ProduceRequest(
                transactional_id=None, acks=-1, timeout_ms=int(self.timeout * 1000),
                topic_data=[topic_data(name=self.topic, partition_data=[
                    topic_data.PartitionProduceData(index=p, records=b)
                    for p, b in parts])])
            request.with_header(correlation_id=self.correlation, client_id="bench-loadgen")
            self.sockets[node].sendall(request.encode(version=_VERSION, header=True,
                                                      framed=True))
            sent.append((node, self.correlation))
        for node, correlation in sent:
            self._await(node, correlation)

    def _await(self, node: int, correlation: int) -> None:
        sock = self.sockets[node]
        size = struct.unpack(">i", _read(sock, 4))[0]
        response: Any = ProduceResponse.decode(_read(sock, size), version=_VERSION, header=True)
        if response.header.correlation_id != correlation:
            raise KafkaError("produce responses out of order")
        for topic_response in response.responses:
            for part in topic_response.partition_responses:
                if part.error_code:
                    raise for_code(part.error_code)(f"{self.topic}:{part.index}")

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()


def _read(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            raise KafkaError("the broker closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Publisher:
    """The load generator's publisher: the plain client, or kafka-python's connections
    (`infra.kafka.clients.RecordBatches`) where security settings are configured;
    `partition_of` gives a key's partition as kafka-python's default partitioner would."""

    def __init__(self, bootstrap: str, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.producer = kafka.producer(bootstrap, settings)
        self.partition_of = kafka.KeyPartitions(lambda: self.producer.partitions_for(topic))
        self.client = None if settings.kafka_options else \
            PlainProduceClient(self.producer, topic)
        self.batches = kafka.RecordBatches(self.producer)

    def publish(self, records: Records) -> None:
        if self.client is not None:
            self.client.publish(records)
        else:
            self.batches.publish(self.topic, records)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.producer.close()
