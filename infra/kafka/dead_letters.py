"""Dead letters: the original message plus where it came from and a machine-readable code."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger(__name__)


# A dead letter carries at most this much of the original value and key: with the base64 copy
# and the envelope it stays far below any broker's limit (Kafka's default is 1 MiB). A longer
# one keeps its first bytes, its size and its SHA-256; the source topic, partition and offset
# point to the whole record while the topic keeps it.
MAX_LETTER_VALUE = 64 * 1024
MAX_LETTER_KEY = 1024


def _clip(data: bytes, limit: int) -> tuple[bytes, dict[str, Any]]:
    if len(data) <= limit:
        return data, {}
    return data[:limit], {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def dead_letter(record: ConsumerRecord, code: str, message: str, consumer: str) -> dict[str, Any]:
    value, value_cut = _clip(record.value if record.value is not None else b"",
                             MAX_LETTER_VALUE)
    key, key_cut = _clip(record.key or b"", MAX_LETTER_KEY)
    letter: dict[str, Any] = {
        "code": code,
        "error": message[:1000],
        "consumer": consumer,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": key.decode("utf-8", "replace") if record.key else None,
        "value_b64": base64.b64encode(value).decode("ascii"),
        "dead_lettered_at": datetime.now(UTC).isoformat(),
    }
    if value_cut:
        letter["value_truncated"] = value_cut
    if key_cut:
        letter["key_truncated"] = key_cut
    try:
        letter["value"] = None if value_cut else value.decode("utf-8")
    except UnicodeDecodeError:
        letter["value"] = None
    return letter


def letter_key(record: ConsumerRecord) -> bytes | None:
    return record.key[:MAX_LETTER_KEY] if record.key else None


class DeadLetters:
    """Collects dead letters for a batch; `flush()` must succeed before the batch commits, so a
    crash can duplicate a dead letter (same topic/partition/offset) but never lose one. A
    record dead-lettered once by this process is not sent again when its batch is redone (an
    optimistic batch that met a unique key, a conflict, a failure narrowed down)."""

    REMEMBERED = 100_000  # source coordinates of letters sent, oldest forgotten first

    def __init__(self, producer: KafkaProducer, topic: str, consumer: str) -> None:
        self.producer = producer
        self.topic = topic
        self.consumer = consumer
        self._futures: list[Any] = []
        self._pending: list[tuple[str, int, int]] = []
        self._sent: OrderedDict[tuple[str, int, int], None] = OrderedDict()
        self.count = 0
        self.by_code: dict[str, int] = {}

    def send(self, record: ConsumerRecord, code: str, message: str) -> None:
        source = (record.topic, record.partition, record.offset)
        if source in self._sent:
            return
        letter = dead_letter(record, code, message, self.consumer)
        self._futures.append(self.producer.send(
            self.topic, key=letter_key(record), value=orjson.dumps(letter),
            headers=[("billing-error-code", code.encode())],
        ))
        self._pending.append(source)
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
        pending, self._pending = self._pending, []
        for future in futures:
            future.get(timeout=30)  # raises if the broker did not take it
        for source in pending:
            self._sent[source] = None
        while len(self._sent) > self.REMEMBERED:
            self._sent.popitem(last=False)


# --- operator tools: `billing dlq list|replay` ----------------------------------------------

REPLAYS_DDL = """
CREATE TABLE IF NOT EXISTS dlq_replays (
    dlq_partition int NOT NULL,
    dlq_offset bigint NOT NULL,
    replayed_at timestamptz NOT NULL DEFAULT now(),
    target text NOT NULL,
    edited boolean NOT NULL,
    PRIMARY KEY (dlq_partition, dlq_offset)
)"""


def read_letters(bootstrap: str, settings: Any, quiet_seconds: float = 1.5
                 ) -> list[dict[str, Any]]:
    """Every dead letter from offset 0, each with its own DLQ partition and offset."""
    from infra.kafka import clients as kafka
    letters = []
    for r in kafka.read_from_start(bootstrap, settings, settings.topics.dlq,
                                   "billing-dlq-reader", quiet_seconds):
        letter = orjson.loads(r.value)
        letter["dlq_partition"], letter["dlq_offset"] = r.partition, r.offset
        letters.append(letter)
    return sorted(letters, key=lambda x: (x["dlq_partition"], x["dlq_offset"]))


def replayed(conn: Any) -> set[tuple[int, int]]:
    conn.execute(REPLAYS_DDL)
    rows = conn.execute("SELECT dlq_partition, dlq_offset FROM dlq_replays").fetchall()
    conn.commit()
    return {(int(p), int(o)) for p, o in rows}


def original_bytes(letter: dict[str, Any]) -> bytes:
    if letter.get("value_truncated"):
        raise ValueError(f"dead letter {letter.get('dlq_partition')}:{letter.get('dlq_offset')} "
                         "holds only the start of its message (too large to carry); fix it "
                         "at the source or give an edited value")
    return base64.b64decode(letter["value_b64"])


def fixed_bytes(letter: dict[str, Any]) -> bytes:
    """The message to replay: the original bytes, or the edited `value` when the operator
    changed it (a JSON object or a string)."""
    value = letter.get("value")
    if isinstance(value, dict | list):
        return orjson.dumps(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return original_bytes(letter)


def replay(producer: KafkaProducer, conn: Any, letters: list[dict[str, Any]]) -> int:
    """Publish each letter's message to the topic it came from (same key), then record the
    replay. A replayed message goes through the normal checks again: its ids keep it from
    counting twice, and if it is still wrong it is dead-lettered again with its code."""
    conn.execute(REPLAYS_DDL)
    futures = [producer.send(letter["topic"], key=(letter.get("key") or "").encode() or None,
                             value=fixed_bytes(letter)) for letter in letters]
    producer.flush()
    for future in futures:
        future.get(timeout=30)
    with conn.transaction():
        for letter in letters:
            conn.execute(
                "INSERT INTO dlq_replays (dlq_partition, dlq_offset, target, edited) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (dlq_partition, dlq_offset) DO UPDATE "
                "SET replayed_at = now(), edited = EXCLUDED.edited",
                (letter["dlq_partition"], letter["dlq_offset"], letter["topic"],
                 bool(letter.get("value_truncated"))
                 or fixed_bytes(letter) != original_bytes(letter)))
    return len(letters)
