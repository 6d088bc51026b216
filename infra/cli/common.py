"""What every command needs: the running stack, times given on the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from infra.config import Settings
from infra.stack.embedded import Stack, start_stack

if TYPE_CHECKING:
    from datetime import datetime


def _stack_file(settings: Settings) -> Path:
    return settings.data_dir / "current-stack.json"


def connect(settings: Settings) -> Stack:
    """Where to find a running stack: external settings, or the embedded one `billing run` wrote
    down. (An embedded stack's broker is in memory: starting a new one would find no data.)"""
    if settings.stack != "embedded":
        return start_stack(settings)
    path = _stack_file(settings)
    if not path.exists():
        raise SystemExit(
            "no running embedded stack: start `billing run` in another terminal, or set "
            "BILLING_STACK=external with BILLING_DATABASE_URL and BILLING_KAFKA_BOOTSTRAP"
        )
    info = json.loads(path.read_text())
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError):
        raise SystemExit(f"the stack in {path} is gone (its `billing run` stopped)") from None
    return Stack(info["database_url"], info["kafka_bootstrap"], "embedded")


def time_arg(text: str, flag: str) -> datetime:
    """A time given on the command line: RFC 3339 with its offset, as on the topics."""
    from domain.contracts.usage import parse_rfc3339

    try:
        return parse_rfc3339(text)
    except ValueError as e:
        raise SystemExit(f"{flag}: {e} (invalid_timestamp)") from None
