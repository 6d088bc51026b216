"""`billing dlq`: dead letters."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from infra.cli.common import OK, UsageError, connect
from infra.config import Settings


def letter_id(text: str) -> tuple[int, int]:
    """PARTITION:OFFSET, a letter's place in billing.dlq."""
    partition, sep, offset = text.partition(":")
    if not (sep and partition.isdigit() and offset.isdigit()):
        raise argparse.ArgumentTypeError(f"PARTITION:OFFSET, e.g. 0:17: {text!r}")
    return int(partition), int(offset)


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    """List dead letters, or replay them (as they were, or as edited in a JSON-lines file)."""
    import psycopg

    from infra.kafka import clients as kafka
    from infra.kafka import dead_letters as dlq
    if args.file and args.verb != "replay":
        raise UsageError("billing dlq list: --file goes with replay", "usage")
    edited = ([_letter_from_line(n, line) for n, line in enumerate(Path(args.file).read_text(
        encoding="utf-8").splitlines(), 1) if line.strip()] if args.file else None)
    stack = connect(settings)
    with psycopg.connect(stack.database_url) as conn:
        done = dlq.replayed(conn)
        chosen = (edited if edited is not None
                  else dlq.read_letters(stack.kafka_bootstrap, settings))
        wanted_ids = set(args.id or [])
        selected = [
            letter for letter in chosen
            if (args.code is None or letter.get("code") == args.code)
            and (not wanted_ids or (letter["dlq_partition"], letter["dlq_offset"]) in wanted_ids)
            and (args.again or args.all
                 or (letter["dlq_partition"], letter["dlq_offset"]) not in done)
        ]
        if args.verb == "list":
            for letter in selected:
                letter["replayed"] = (letter["dlq_partition"], letter["dlq_offset"]) in done
            if args.jsonl:
                for letter in selected:
                    print(json.dumps(letter, default=str))
            elif args.json:
                print(json.dumps(selected, indent=2, default=str))
            else:
                for letter in selected:
                    value = letter.get("value")
                    shown = (value if isinstance(value, str) else "<binary>")[:80]
                    print(f"{letter['dlq_partition']}:{letter['dlq_offset']}  "
                          f"{letter['code']:<24} {letter['topic']}:{letter['partition']}"
                          f"@{letter['offset']}  {'(replayed) ' if letter['replayed'] else ''}"
                          f"{letter['error'][:60]}  {shown}")
                print(f"{len(selected)} dead letter(s)")
            return OK
        producer = kafka.producer(stack.kafka_bootstrap, settings)
        try:
            count = dlq.replay(producer, conn, selected)
        finally:
            producer.close()
    print(json.dumps({"replayed": count}) if args.json else f"replayed {count} message(s)")
    return OK


def _letter_from_line(number: int, line: str) -> dict[str, Any]:
    try:
        letter = json.loads(line)
    except json.JSONDecodeError:
        letter = None
    if not isinstance(letter, dict) or "dlq_partition" not in letter or "topic" not in letter:
        raise UsageError(f"--file line {number}: each line must be a dead letter as printed by "
                         "`billing dlq list --jsonl`", "usage")
    return letter
