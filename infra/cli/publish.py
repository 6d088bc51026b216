"""`billing usage publish` and `billing commands publish`: JSON-lines files to a topic."""

from __future__ import annotations

import argparse

import orjson

from infra.cli.common import connect
from infra.config import Settings
from infra.render.terminal import print_json


def cmd_usage_publish(args: argparse.Namespace, settings: Settings) -> int:
    return _publish_file(args, settings, settings.topics.usage, "usage events")


def _publish_file(args: argparse.Namespace, settings: Settings, topic: str, what: str) -> int:
    """Publish a JSON-lines file, keyed by each line's "subscription"; lines that are not valid
    JSON are published as they are (the consumer dead-letters them with a code)."""
    from infra.kafka import clients as kafka
    stack = connect(settings)
    with open(args.file, "rb") as f:
        messages = [(_key_of(line), line) for line in (raw.strip() for raw in f) if line]
    producer = kafka.producer(stack.kafka_bootstrap, settings)
    ends = kafka.publish(producer, topic, messages)
    producer.close()
    if args.json:
        print_json({"published": len(messages), "topic": topic,
                     "end_offsets": {str(p): o for p, o in sorted(ends.items())}})
    else:
        print(f"published {len(messages)} {what} to {topic}")
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
