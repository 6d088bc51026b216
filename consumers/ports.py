"""What the consumers need from the outside, handed in by the composition root
(infra/wiring/engine.py): they import nothing from infra/."""

from __future__ import annotations

from typing import Protocol

from kafka.consumer.fetcher import ConsumerRecord


class DeadLetterSink(Protocol):
    """Where a record no worker can apply goes, with a machine-readable code
    (infra/kafka/dead_letters.py on the dead-letter topic; a list in a test)."""

    def send(self, record: ConsumerRecord, code: str, message: str) -> None: ...

    def flush(self) -> None: ...
