"""`billing usage publish` and `billing commands publish`: JSON-lines files to a topic."""

from __future__ import annotations

import argparse
import os

import orjson

from infra.cli.common import connect
from infra.config import Settings
from infra.render.progress import ProgressLine
from infra.render.terminal import print_json

CHUNK_BYTES = 1024 * 1024  # lines read and sent per round


def cmd_usage_publish(args: argparse.Namespace, settings: Settings) -> int:
    return _publish_file(args, settings, settings.topics.usage, "usage events")


def _publish_file(args: argparse.Namespace, settings: Settings, topic: str, what: str) -> int:
    """Publish a JSON-lines file, keyed by each line's "subscription"; lines that are not valid
    JSON are published as they are (the consumer dead-letters them with a code). Read and sent
    in chunks, so a file of any size takes bounded memory; progress on stderr."""
    from infra.kafka import clients as kafka
    stack = connect(settings)
    producer = kafka.producer(stack.kafka_bootstrap, settings)
    progress = ProgressLine(f"publishing {args.file}", os.path.getsize(args.file), "bytes")
    ends: dict[int, int] = {}
    sent = 0
    try:
        with open(args.file, "rb") as f:
            while chunk := f.readlines(CHUNK_BYTES):
                messages = [(_key_of(line), line) for line in (raw.strip() for raw in chunk)
                            if line]
                for partition, end in kafka.publish(producer, topic, messages).items():
                    ends[partition] = max(end, ends.get(partition, 0))
                sent += len(messages)
                progress.advance(sum(len(raw) for raw in chunk))
    finally:
        producer.close()
    progress.finish()
    if args.json:
        print_json({"published": sent, "topic": topic,
                     "end_offsets": {str(p): o for p, o in sorted(ends.items())}})
    else:
        print(f"published {sent} {what} to {topic}")
    return 0


def cmd_commands_publish(args: argparse.Namespace, settings: Settings) -> int:
    return _publish_file(args, settings, settings.topics.commands, "commands")


def _key_of(line: bytes) -> bytes | None:
    try:
        body = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None  # published as is: the consumer dead-letters it with a code
    if isinstance(body, dict) and isinstance(body.get("subscription"), str):
        return str(body["subscription"]).encode()
    return None
