"""Dead letters: the original message plus where it came from and a machine-readable code."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger(__name__)


def dead_letter(record: ConsumerRecord, code: str, message: str, consumer: str) -> dict[str, Any]:
    value: bytes = record.value if record.value is not None else b""
    letter: dict[str, Any] = {
        "code": code,
        "error": message[:1000],
        "consumer": consumer,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key.decode("utf-8", "replace") if record.key else None,
        "value_b64": base64.b64encode(value).decode("ascii"),
        "dead_lettered_at": datetime.now(UTC).isoformat(),
    }
    try:
        letter["value"] = value.decode("utf-8")
    except UnicodeDecodeError:
        letter["value"] = None
    return letter


class DeadLetters:
    """Collects dead letters for a batch; `flush()` must succeed before the batch commits, so a
    crash can duplicate a dead letter (same topic/partition/offset) but never lose one."""

    def __init__(self, producer: KafkaProducer, topic: str, consumer: str) -> None:
        self.producer = producer
        self.topic = topic
        self.consumer = consumer
        self._futures: list[Any] = []
        self.count = 0
        self.by_code: dict[str, int] = {}

    def send(self, record: ConsumerRecord, code: str, message: str) -> None:
        letter = dead_letter(record, code, message, self.consumer)
        self._futures.append(self.producer.send(
            self.topic, key=record.key, value=orjson.dumps(letter),
            headers=[("billing-error-code", code.encode())],
        ))
        self.count += 1
        self.by_code[code] = self.by_code.get(code, 0) + 1
        log.info("dead-lettered %s:%s@%s: %s", record.topic, record.partition, record.offset,
                 code, extra={"topic": record.topic, "partition": record.partition,
                              "position": record.offset, "code": code, "worker": self.consumer,
                              "subscription": letter["key"]})

    def flush(self) -> None:
        if not self._futures:
            return
        self.producer.flush()
        futures, self._futures = self._futures, []
        for future in futures:
            future.get(timeout=30)  # raises if the broker did not take it
