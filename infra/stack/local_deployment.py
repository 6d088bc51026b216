"""The embedded stack `billing run` keeps in its data directory: one per directory, kept across
restarts and crashes.

`BILLING_DATA_DIR/stack/` holds PostgreSQL's data (`pg/`, with its generated password beside
it), and in `apache-kafka` broker mode the broker's log directory (`kafka/`). A restart, clean
or after `kill -9` or a power loss, starts the servers again on the same data (PostgreSQL
recovers from its WAL, Kafka from its logs); `billing run --fresh` deletes them first. The
Tansu broker keeps nothing: after a restart its topics are new, which the engine notices and
handles (infra/kafka/topic_identity.py).

The first `billing run` in a directory owns the stack: it holds an exclusive lock on
`stack/lock` while it lives (the kernel drops it when the process dies, however it dies) and
writes the addresses to `current-stack.json`. A second `billing run` (say `--only ingest`) finds
the lock taken and joins that stack instead of starting another. A `current-stack.json` whose
lock nobody holds was left by a run that died: it is not trusted, and the next run replaces it.
Servers a killed owner left running (PostgreSQL and the broker run in sessions of their own)
are stopped before the stack starts again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from infra.config import ConfigError, Settings
from infra.stack import embedded
from infra.stack.embedded import Stack

log = logging.getLogger(__name__)

JOIN_WAIT_SECONDS = 300.0  # an owner's first start resolves Apache Kafka's jars with Maven


def stack_dir(settings: Settings) -> Path:
    return settings.data_dir / "stack"


def stack_file(settings: Settings) -> Path:
    """Where the owner writes the stack's addresses for the CLI and for joining runs."""
    return settings.data_dir / "current-stack.json"


class StackTaken(ConfigError):
    """Another live `billing run` owns this directory's stack."""


@dataclass
class Ownership:
    """The lock on a data directory's stack, held for the life of the process."""

    handle: IO[str]

    @classmethod
    def take(cls, settings: Settings) -> Ownership | None:
        """The lock, or None if a live process holds it."""
        path = stack_dir(settings) / "lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return cls(handle)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def owner_alive(settings: Settings) -> bool:
    """Whether a live `billing run` owns the stack (it holds the lock)."""
    if not (stack_dir(settings) / "lock").exists():
        return False
    probe = Ownership.take(settings)
    if probe is None:
        return True
    probe.release()
    return False


def running_stack(settings: Settings) -> dict[str, Any] | None:
    """The addresses the live owner wrote, or None: no owner, or a file whose writer (pid and
    start time) is not alive, one a dead run left (e.g. while a new owner is starting)."""
    try:
        info: dict[str, Any] = json.loads(stack_file(settings).read_text())
        complete = {"pid", "started", "database_url", "kafka_bootstrap"} <= info.keys()
        writer_alive = complete and embedded.started_at(int(info["pid"])) == info["started"]
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return info if writer_alive and owner_alive(settings) else None


def open_stack(settings: Settings, fresh: bool = False) -> Stack:
    """This directory's stack: started (and owned) by this process, or joined if another
    `billing run` owns it. `stack.joined` tells which."""
    deadline = time.monotonic() + JOIN_WAIT_SECONDS
    while True:
        ownership = Ownership.take(settings)
        if ownership is not None:
            return _start_owned(settings, ownership, fresh)
        info = running_stack(settings)
        if info is not None:
            if fresh:
                raise StackTaken(f"--fresh: the stack in {stack_dir(settings)} is in use by "
                                 f"`billing run` (pid {info.get('pid')}); stop it first")
            stack = Stack(info["database_url"], info["kafka_bootstrap"], "embedded",
                          joined=True)
            log.info("joined the stack of billing run pid %s", info.get("pid"))
            return stack
        if time.monotonic() > deadline:  # the owner holds the lock and never wrote the file
            raise StackTaken(f"the stack in {stack_dir(settings)} is locked by a process that "
                             f"has not said where it is after {JOIN_WAIT_SECONDS:.0f} s")
        time.sleep(0.2)  # its owner is starting it


def _start_owned(settings: Settings, ownership: Ownership, fresh: bool) -> Stack:
    base = stack_dir(settings)
    try:
        stack_file(settings).unlink(missing_ok=True)  # a dead run's addresses
        _stop_left_running(base)
        if fresh:
            for entry in base.iterdir():
                if entry.name != "lock":
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            log.info("--fresh: the stack's data in %s was deleted", base)
            _set_audit_copy_aside(settings)
        stack = embedded.start_kept_stack(settings, base)
    except BaseException:
        ownership.release()
        raise
    stack._closers.insert(0, ownership.release)  # released last, once the servers stopped
    path = stack_file(settings)
    # The URL holds the embedded superuser's password: readable by this user only.
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps({"pid": os.getpid(), "started": embedded.started_at(os.getpid()),
                                "database_url": stack.database_url,
                                "kafka_bootstrap": stack.kafka_bootstrap,
                                "broker": settings.broker}))
    stack._closers.insert(1, lambda: path.unlink(missing_ok=True))
    return stack


def _stop_left_running(base: Path) -> None:
    """The servers of an owner that died without stopping them (SIGKILL, OOM): they hold the
    data directories and would refuse a second server on them."""
    pid_file = base / "broker.pid"
    if pid_file.exists():
        embedded.kill_if_ours(pid_file)
        pid_file.unlink(missing_ok=True)
    if (base / "pg" / "postmaster.pid").exists():
        embedded.EmbeddedPostgres(base / "pg").stop_left_running()


def _set_audit_copy_aside(settings: Settings) -> None:
    """The kept copy of the audit anchors belongs to the deleted store: a new store's anchors
    start again from 1, and `verify` would compare them with the old ones."""
    kept = settings.data_dir / "audit"
    if kept.exists():
        aside = kept.with_name(f"audit.before-fresh-{time.strftime('%Y%m%dT%H%M%S')}")
        kept.rename(aside)
        log.info("--fresh: the audit copy of the deleted store was moved to %s", aside)
